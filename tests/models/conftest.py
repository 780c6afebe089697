"""Fixtures for the model tests: a temporary BentoML store for the whole session (BentoML reads
BENTOML_HOME once, so its container is pointed at the temporary store too), the tiny models,
and the store populated through the real import path."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import modelfactory
import pytest
from models_support import TINY_CLS, TINY_LAST, TINY_MEAN, TINY_RERANKER, Defaults, Sources


@contextmanager
def bentoml_store(home: Path) -> Iterator[Path]:
    """Point BentoML (env for subprocesses, container for this process) at `home`."""
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.models.model import ModelStore

    (home / "models").mkdir(parents=True, exist_ok=True)
    saved = {k: os.environ.get(k) for k in ("BENTOML_HOME", "BENTOML_DO_NOT_TRACK")}
    os.environ["BENTOML_HOME"] = str(home)
    os.environ["BENTOML_DO_NOT_TRACK"] = "true"
    try:
        with (
            BentoMLContainer.bentoml_home.patch(str(home)),
            BentoMLContainer.model_store.patch(ModelStore(str(home / "models"))),
        ):
            yield home
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session", autouse=True)
def bentoml_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with bentoml_store(tmp_path_factory.mktemp("bentoml_home")) as home:
        yield home


@pytest.fixture
def empty_store(tmp_path: Path) -> Iterator[Path]:
    """A fresh, empty store for one test (the session store is restored after)."""
    with bentoml_store(tmp_path / "bentoml_home") as home:
        yield home


@pytest.fixture(scope="session")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Sources:
    root = tmp_path_factory.mktemp("model_src")
    return Sources(
        mean=modelfactory.make_tiny_embedder(root / "mean", pooling="mean"),
        cls=modelfactory.make_tiny_embedder(root / "cls", pooling="cls", normalize=False),
        last=modelfactory.make_tiny_embedder(root / "last", pooling="lasttoken"),
        cross_encoder=modelfactory.make_tiny_cross_encoder(root / "rr"),
    )


@pytest.fixture(scope="session")
def defaults(bentoml_home: Path) -> Defaults:
    """`import_defaults` offline in the session store: MiniLM as `embedder`, no reranker."""
    from models.build import importer

    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    lines: list[str] = []
    try:
        tags = importer.import_defaults(echo=lines.append)
    finally:
        mp.undo()
    return Defaults(lines, tags)


@pytest.fixture(scope="session")
def tiny_store(bentoml_home: Path, sources: Sources) -> dict[str, str]:
    """The tiny embedders (mean, cls, last-token pooling) and the tiny cross-encoder, imported."""
    from models.build import importer

    return {
        TINY_MEAN: importer.import_embedder(str(sources.mean), TINY_MEAN),
        TINY_CLS: importer.import_embedder(str(sources.cls), TINY_CLS),
        TINY_LAST: importer.import_embedder(str(sources.last), TINY_LAST),
        TINY_RERANKER: importer.import_reranker(str(sources.cross_encoder), TINY_RERANKER),
    }


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # BentoML's model store uses a pathspec API that warns on every store access.
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.filterwarnings("ignore::DeprecationWarning:pathspec"))
