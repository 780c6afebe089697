"""FastAPI dependencies: the objects the lifespan created, and the API-key check."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from backend.guards import UploadGate
from backend.ingest.pipeline import Ingestor
from backend.mlapi import MLClient
from backend.registry import Registry
from backend.settings import Settings
from backend.store import VectorStore
from ragstack_common.http import bearer_matches


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _registry(request: Request) -> Registry:
    return request.app.state.registry


def _store(request: Request) -> VectorStore:
    return request.app.state.store


def _ml(request: Request) -> MLClient:
    return request.app.state.ml


def _ingestor(request: Request) -> Ingestor:
    return request.app.state.ingestor


def _upload_gate(request: Request) -> UploadGate:
    return request.app.state.upload_gate


SettingsDep = Annotated[Settings, Depends(_settings)]
RegistryDep = Annotated[Registry, Depends(_registry)]
StoreDep = Annotated[VectorStore, Depends(_store)]
MLDep = Annotated[MLClient, Depends(_ml)]
IngestorDep = Annotated[Ingestor, Depends(_ingestor)]
UploadGateDep = Annotated[UploadGate, Depends(_upload_gate)]

_bearer = HTTPBearer(auto_error=False, description="API_KEY, when the backend has one set.")


async def require_api_key(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    if settings.api_key is None:
        return
    given = f"Bearer {credentials.credentials}" if credentials else None
    if not bearer_matches(given, settings.api_key.get_secret_value()):
        raise HTTPException(
            401,
            "missing or invalid API key (send Authorization: Bearer <API_KEY>)",
            headers={"WWW-Authenticate": "Bearer"},
        )
