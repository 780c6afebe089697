"""Settings come from environment variables without prefix."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.settings import Settings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.ml_api_url == "http://127.0.0.1:8001"
    assert s.qdrant_url is None and s.qdrant_folder == Path("data/qdrant")
    assert (s.chunk_size, s.rerank_candidates, s.default_top_k) == (256, 50, 10)
    assert (s.embed_batch_size, s.embed_concurrency) == (64, 4)
    assert s.api_key is None and s.cors_origins == []
    assert (s.max_pending_documents, s.max_concurrent_uploads) == (1000, 8)
    assert (s.max_pdf_pages, s.max_extracted_chars) == (2000, 5_000_000)
    assert (s.parse_timeout_s, s.parse_memory_mb) == (120.0, 2048)
    assert (s.max_upload_bytes, s.max_request_bytes) == (50 * 2**20, 200 * 2**20)


def test_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ML_API_URL", "http://ml:8001/")
    monkeypatch.setenv("ML_API_KEY", "secret")
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CORS_ORIGINS", "http://a.test, http://b.test")
    monkeypatch.setenv("EMBED_BATCH_SIZE", "16")
    monkeypatch.setenv("API_KEY", "k")
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.ml_api_url == "http://ml:8001"
    assert s.ml_api_key is not None and s.ml_api_key.get_secret_value() == "secret"
    assert "secret" not in repr(s)
    assert s.qdrant_folder == tmp_path / "qdrant"
    assert s.registry_path == tmp_path / "registry.sqlite3"
    assert s.cors_origins == ["http://a.test", "http://b.test"]
    assert s.embed_batch_size == 16


def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEFAULT_TOP_K", "0")
    with pytest.raises(ValueError, match="default_top_k"):
        Settings(_env_file=None)  # type: ignore[call-arg]
