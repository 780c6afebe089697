"""Ports are defined once per service; the places that cannot import the constant (the backend's
default ml-api URL, the compose file) must agree with it."""

from __future__ import annotations

from urllib.parse import urlsplit

import yaml
from stack import ROOT

from backend.settings import Settings
from models.runtime.settings import ML_API_PORT
from ragctl.client import BACKEND_PORT, DEFAULT_URL


def test_backend_defaults_point_at_the_ml_api_port(monkeypatch) -> None:
    monkeypatch.delenv("ML_API_URL", raising=False)
    monkeypatch.delenv("PORT", raising=False)
    settings = Settings(_env_file=None)
    assert urlsplit(settings.ml_api_url).port == ML_API_PORT
    assert settings.port == BACKEND_PORT
    assert urlsplit(DEFAULT_URL).port == BACKEND_PORT


def test_compose_file_uses_the_same_ports() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    ml, backend = services["ml-api"], services["backend"]
    assert int(ml["environment"]["BENTOML_PORT"]) == ML_API_PORT
    assert f"{ML_API_PORT}:{ML_API_PORT}" in ml["ports"]
    assert urlsplit(backend["environment"]["ML_API_URL"]).port == ML_API_PORT
    assert f"{BACKEND_PORT}:{BACKEND_PORT}" in backend["ports"]
