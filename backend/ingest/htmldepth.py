"""A linear-time bound on HTML nesting, checked before an HTML parser sees the file.

Lexbor (like most HTML5 tree builders) spends time proportional to the open-element stack on
each new element, so deeply nested markup costs quadratic time: a 2 MB file of nested `<div>`s
keeps a core busy past the parse timeout. Browsers cap the tree depth themselves (Blink's
parser at 512); here a file whose elements nest deeper than MAX_HTML_DEPTH is refused up front.

The estimate counts start tags minus end tags of elements that need an end tag; comments and
the raw text of scripts and styles are skipped, since a parser does not see tags inside them.
Elements whose end tag is optional (`p`, `li`, `td`, ...) or void (`br`, `img`, ...) are not
counted, so sloppy real-world HTML does not look deep.
"""

from __future__ import annotations

import re

MAX_HTML_DEPTH = 4096

_TOKENS = re.compile(
    r"<!--.*?(?:-->|\Z)|<(script|style)\b[^>]*>.*?(?:</\1\s*>|\Z)|<(/?)([a-zA-Z][a-zA-Z0-9:-]*)[^>]*?(/?)>",
    re.DOTALL | re.IGNORECASE,
)
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param"}
_VOID |= {"source", "track", "wbr"}
# End tag optional: the parser closes these implicitly.
_OPTIONAL_END = {"html", "head", "body", "p", "li", "dt", "dd", "tr", "td", "th", "thead"}
_OPTIONAL_END |= {"tbody", "tfoot", "colgroup", "caption", "option", "optgroup", "rb", "rt"}
_OPTIONAL_END |= {"rtc", "rp"}
_NOT_COUNTED = frozenset(_VOID | _OPTIONAL_END)


def too_deep(text: str, limit: int = MAX_HTML_DEPTH) -> bool:
    """True when the elements of `text` may nest more than `limit` deep."""
    depth = 0
    for match in _TOKENS.finditer(text):
        name = match.group(3)
        if name is None or match.group(4) or name.lower() in _NOT_COUNTED:
            continue  # a comment, script or style, self-closed or uncounted element
        if match.group(2):
            depth = max(0, depth - 1)
        else:
            depth += 1
            if depth > limit:
                return True
    return False


def message(limit: int = MAX_HTML_DEPTH) -> str:
    return f"HTML elements nested more than {limit} deep (fixed limit)"
