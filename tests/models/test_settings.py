"""MLSettings reads the ml-api key as ML_API_KEY (the backend's name for it), and the old
ML_API_API_KEY with a deprecation warning."""

from __future__ import annotations

import pytest

from models.runtime.settings import MLSettings


@pytest.fixture(autouse=True)
def _no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ML_API_KEY", raising=False)
    monkeypatch.delenv("ML_API_API_KEY", raising=False)
    monkeypatch.chdir("/")  # no .env of the working tree


def test_ml_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    assert MLSettings().api_key is None
    monkeypatch.setenv("ML_API_KEY", "s3cret")
    assert MLSettings().api_key == "s3cret"


def test_old_name_still_works_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("ML_API_API_KEY", "old")
    with pytest.warns(DeprecationWarning, match="set ML_API_KEY"):
        settings = MLSettings()
    assert settings.api_key == "old"
    assert "ML_API_API_KEY is deprecated" in caplog.text
    assert "deprecated_api_key" not in settings.model_dump()


def test_new_name_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ML_API_KEY", "new")
    monkeypatch.setenv("ML_API_API_KEY", "old")
    with pytest.warns(DeprecationWarning):
        assert MLSettings().api_key == "new"


def test_set_by_field_name() -> None:
    assert MLSettings(api_key="k").api_key == "k"


def test_bulk_runner_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bulk passes leave the model worker on CPU by default (a pass cannot be pre-empted and
    the cores are shared); on a GPU a pass is short and there is no CPU priority to lower."""
    auto = MLSettings()
    assert auto.background_bulk(on_gpu=False) and not auto.background_bulk(on_gpu=True)
    monkeypatch.setenv("ML_API_BULK_RUNNER", "shared")
    assert not MLSettings().background_bulk(on_gpu=False)
    monkeypatch.setenv("ML_API_BULK_RUNNER", "background")
    assert MLSettings().background_bulk(on_gpu=True)  # asked for; the runtime may still refuse
    monkeypatch.setenv("ML_API_BULK_THREADS", "3")
    assert MLSettings().bulk_thread_count() == 3
    monkeypatch.delenv("ML_API_BULK_THREADS")
    assert MLSettings().bulk_thread_count() >= 1
    monkeypatch.setenv("ML_API_BULK_NICE", "20")
    with pytest.raises(ValueError, match="bulk_nice"):
        MLSettings()
