"""Client errors in the ml-api's log as one line, not a traceback at ERROR.

BentoML logs every request it rejects (a body that fails validation, bad JSON) with
`logger.error(..., exc_info=True)`: a full traceback per 4xx, which buries real errors. This
filter on BentoML's request logger turns those records into one INFO line naming the route and
what was wrong; server errors (5xx, unexpected exceptions) keep their traceback.
"""

from __future__ import annotations

import logging

# The logger BentoML's `log_exception` writes to.
BENTOML_REQUEST_LOGGER = "bentoml._internal.server.http_app"
_MAX_CHARS = 300


def _client_status(exc: BaseException | None) -> int | None:
    from bentoml.exceptions import BentoMLException
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        return 400
    if isinstance(exc, BentoMLException) and exc.error_code.value < 500:
        return int(exc.error_code.value)
    return None


def _summary(exc: BaseException) -> str:
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        first = exc.errors(include_input=False)[0]
        loc = ".".join(str(x) for x in first.get("loc", ()))
        text = f"{exc.error_count()} validation error(s), first {loc}: {first.get('msg')}"
    else:
        text = str(exc)
    return " ".join(text.split())[:_MAX_CHARS]


class ClientErrorFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        status = _client_status(exc)
        if exc is None or status is None:
            return True
        where = " ".join(str(a) for a in record.args) if isinstance(record.args, tuple) else ""
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.msg, record.args = "client error %d on %s: %s", (status, where, _summary(exc))
        record.exc_info, record.exc_text = None, None
        return True


def install() -> None:
    logger = logging.getLogger(BENTOML_REQUEST_LOGGER)
    if not any(isinstance(f, ClientErrorFilter) for f in logger.filters):
        logger.addFilter(ClientErrorFilter())
