"""Where a model to import comes from: a local folder, or the Hugging Face hub (and its local
cache when the hub cannot be reached). Only the import pipeline (`models.build.importer`) uses it.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path

Progress = Callable[[str], None]

_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?(@[\w./-]+)?$")  # owner/name[@revision]


def _noop(_: str) -> None:
    pass


def _offline_env() -> bool:
    val = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return val.strip().lower() in {"1", "true", "yes", "on"}


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hub_reachable(timeout: float = 3.0) -> tuple[bool, str]:
    """(reachable, why not). Honours HF_HUB_OFFLINE; otherwise one short HEAD request."""
    import httpx

    if _offline_env():
        return False, "HF_HUB_OFFLINE is set"
    endpoint = hub_endpoint()
    try:
        response = httpx.head(endpoint, timeout=timeout, follow_redirects=False)
    except httpx.HTTPError as err:
        return False, f"{endpoint} is unreachable ({type(err).__name__}: {err})"
    if response.status_code >= 500:
        return False, f"{endpoint} answered HTTP {response.status_code}"
    return True, ""


def content_hash(folder: Path, files: list[Path]) -> str:
    """sha256 over the relative paths and bytes of `files`: the revision of a local import."""
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(str(f.relative_to(folder)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return "sha256:" + h.hexdigest()[:32]


def _hub_files(repo_id: str, revision: str | None) -> tuple[list[str], str]:
    from huggingface_hub import HfApi

    info = HfApi().model_info(repo_id, revision=revision, files_metadata=False)
    names = [s.rfilename for s in info.siblings or []]
    sha = info.sha or (revision or "main")
    top = [n for n in names if "/" not in n]
    has_st = any(n.endswith(".safetensors") for n in top)
    weights = r".*\.safetensors" if has_st else r"pytorch_model.*\.bin"
    keep = [n for n in top if n.endswith((".json", ".txt", ".model")) or re.fullmatch(weights, n)]
    # sentence-transformers module configs (pooling, normalize, old 0_Transformer layout)
    keep += [n for n in names if re.fullmatch(r"\d+_\w+/[^/]+\.(json|txt|model)", n)]
    keep += [n for n in names if re.fullmatch(r"0_Transformer/.*\.(safetensors|bin)", n)]
    return keep, sha


def cached_snapshot(source: str) -> Path | None:
    """The folder of `repo_id[@revision]` in the local Hugging Face cache, if it is there."""
    from huggingface_hub import snapshot_download

    repo_id, _, revision = source.partition("@")
    try:
        return Path(snapshot_download(repo_id, revision=revision or None, local_files_only=True))
    except Exception:
        return None


def resolve_source(source: str, progress: Progress = _noop) -> tuple[Path, str, str | None, bool]:
    """(local folder, source to record, hub revision or None, from_hub) for a folder or HF id."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path.resolve(), str(path.resolve()), None, False
    if path.exists():
        raise ValueError(f"{source} is a file; give a model folder or a Hugging Face model id")
    if not _HUB_ID.match(source):
        raise ValueError(f"{source} is neither a folder nor a Hugging Face model id")
    from huggingface_hub import snapshot_download

    repo_id, _, revision = source.partition("@")
    ok, why = hub_reachable()
    if not ok:  # a previous download may be in the local Hugging Face cache
        local = cached_snapshot(source)
        if local is None:
            raise RuntimeError(
                f"cannot download {repo_id}: {why}, and it is not in the Hugging Face cache "
                "(download the model elsewhere and import its folder instead)"
            )
        return local, repo_id, local.name, True
    progress(f"downloading {repo_id} from the Hugging Face hub")
    files, sha = _hub_files(repo_id, revision or None)
    local = Path(snapshot_download(repo_id, revision=sha, allow_patterns=files))
    return local, repo_id, sha, True
