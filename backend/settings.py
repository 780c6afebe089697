"""Backend configuration: one pydantic-settings class, read from environment variables (no prefix)
and an optional `.env` file."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MiB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # -- ml-api ------------------------------------------------------------------------------------
    ml_api_url: str = Field("http://127.0.0.1:8001", description="Base URL of the ml-api.")
    ml_api_key: SecretStr | None = Field(None, description="Bearer token sent to the ml-api.")
    ml_api_timeout_s: float = Field(60.0, gt=0, description="Read timeout of one ml-api call.")
    ml_api_retries: int = Field(
        4, ge=0, description="Retries on connection errors, 429 and 503 (exponential backoff)."
    )
    ml_api_backoff_s: float = Field(0.5, ge=0, description="First retry delay; doubles each time.")
    embed_batch_size: int = Field(64, ge=1, le=2048, description="Texts per /embed request.")
    embed_concurrency: int = Field(4, ge=1, description="/embed requests in flight per job.")

    # -- Qdrant ------------------------------------------------------------------------------------
    qdrant_url: str | None = Field(None, description="Qdrant server URL; unset = embedded mode.")
    qdrant_api_key: SecretStr | None = None
    qdrant_path: Path | None = Field(
        None, description="Embedded (local-mode) storage folder; default DATA_DIR/qdrant."
    )
    qdrant_collection: str = Field("documents", min_length=1, pattern=r"^[A-Za-z0-9_\-]+$")
    upsert_batch_size: int = Field(256, ge=1, description="Points per Qdrant upsert call.")

    # -- Storage and ingestion ---------------------------------------------------------------------
    data_dir: Path = Field(Path("./data"), description="Registry database and upload spool.")
    chunk_size: int = Field(256, ge=16, description="Chunk capacity in embedding-model tokens.")
    chunk_overlap: int = Field(
        32, ge=0, description="Token overlap between neighbouring chunks (at most half a chunk)."
    )
    max_upload_bytes: int = Field(50 * MiB, ge=1, description="Largest accepted file.")
    max_request_bytes: int = Field(
        200 * MiB, ge=1, description="Largest upload request body (all files together)."
    )
    max_files_per_upload: int = Field(20, ge=1)
    # Enough documents in flight that their chunks fill the ml-api's batches.
    ingest_concurrency: int = Field(8, ge=1, description="Documents ingested at the same time.")

    # -- Overload and hostile-input limits ---------------------------------------------------------
    max_pending_documents: int = Field(
        1000, ge=1, description="Queued + ingesting documents; more uploads get 429."
    )
    max_concurrent_uploads: int = Field(
        8, ge=1, description="Upload requests received/checked at once; more get 429."
    )
    max_pdf_pages: int = Field(2000, ge=1, description="PDFs with more pages are refused.")
    max_extracted_chars: int = Field(
        5_000_000, ge=1, description="Documents whose text is longer fail."
    )
    body_timeout_s: float = Field(
        30.0,
        gt=0,
        description="A request body must arrive within this, plus 1 s per BODY_MIN_RATE bytes "
        "received (else 408): a slow client cannot hold an upload slot.",
    )
    body_min_rate: int = Field(
        64 * 1024, ge=1, description="Bytes per second that extend the body deadline by 1 s."
    )
    parse_timeout_s: float = Field(
        120.0, gt=0, description="Wall-clock limit of one parse (parser process is killed)."
    )
    parse_memory_mb: int = Field(
        2048, ge=16, description="Memory a parser process may allocate beyond its start-up size."
    )

    # -- Search ------------------------------------------------------------------------------------
    search_mode: Literal["dense", "sparse", "hybrid"] = Field(
        "hybrid",
        description="Default retrieval: dense vectors, BM25 (sparse), or both fused (SciFact: "
        "hybrid 0.737 nDCG@10 vs dense 0.660, BM25 0.701; docs/benchmarks.md).",
    )
    fusion: Literal["dbsf", "rrf"] = Field("dbsf", description="How hybrid fuses dense and BM25.")
    hybrid_prefetch: int = Field(
        100, ge=1, le=1000, description="Candidates each of dense and BM25 bring to the fusion."
    )
    rerank_candidates: int = Field(50, ge=1, le=1000, description="Vector hits sent to rerank.")
    default_top_k: int = Field(10, ge=1, le=100)
    max_query_chars: int = Field(2000, ge=1)

    # -- HTTP --------------------------------------------------------------------------------------
    api_key: SecretStr | None = Field(None, description="When set, routes need Bearer auth.")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated allowed origins; empty = CORS off."
    )
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [o.strip() for o in value.split(",") if o.strip()]
        return value

    @field_validator("ml_api_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @property
    def qdrant_folder(self) -> Path:
        return self.qdrant_path if self.qdrant_path is not None else self.data_dir / "qdrant"

    @property
    def registry_path(self) -> Path:
        return self.data_dir / "registry.sqlite3"

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "uploads"


@lru_cache
def get_settings() -> Settings:
    return Settings()
