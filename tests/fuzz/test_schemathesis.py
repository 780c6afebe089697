"""Property-based requests generated from each service's own OpenAPI schema (schemathesis):
whatever a client sends, schemathesis' own default checks pass (no 5xx, responses and status
codes as documented, invalid data refused, ...), for valid and for invalid generated data."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import ignored_auth, positive_data_acceptance
from stack import ROOT

sys.path.insert(0, str(ROOT / "tests" / "backend"))
from backend_support import launch_backend

# One narrow exception, not a finding: schemathesis cannot generate an upload the backend can
# parse. For a `format: binary` file it sends PNG/ZIP/GIF samples or random bytes (415/422, as
# documented), and `metadata` is JSON inside a multipart string, which JSON Schema cannot
# constrain. So "schema-valid upload accepted" is checked by the upload tests with real files
# (tests/backend); every other check, negative data included, runs on this body too.
NOT_GENERATABLE = {("POST", "/documents", "multipart/form-data"): [positive_data_acceptance]}

BOUNDED = settings(
    max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)


@pytest.fixture(scope="module")
def ml_api_schema(ml_api: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{ml_api}/docs.json")


@pytest.fixture(scope="module")
def backend_url(ml_api: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("fuzz_backend")
    backend = launch_backend(tmp / "data", tmp / "backend.log", ml_api_url=ml_api)
    yield backend.url
    backend.stop()


@pytest.fixture(scope="module")
def backend_schema(backend_url: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{backend_url}/openapi.json")


def fuzz(schema: schemathesis.BaseSchema) -> list[str]:
    """Run every operation with bounded generated cases; the failures, reproducible."""
    # schemathesis' pytest plugin does not run under pytest 9: drive hypothesis directly.
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in GenerationMode:

            @BOUNDED
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: schemathesis.Case) -> None:
                # No `checks=`: the release's whole default set (less NOT_GENERATABLE).
                key = (case.method.upper(), case.path, case.media_type)
                case.call_and_validate(excluded_checks=NOT_GENERATABLE.get(key, []), timeout=60)

            try:
                run()
            except Unsatisfiable:
                continue  # no input to make invalid (e.g. GET /healthz in negative mode)
            except (Exception, BaseExceptionGroup) as exc:  # the minimal failing case(s)
                failures.append(f"{operation.label} ({mode.value}): {exc}"[:2000])
    return failures


def test_ml_api(ml_api_schema: schemathesis.BaseSchema) -> None:
    failures = fuzz(ml_api_schema)
    assert not failures, "\n\n".join(failures)


def test_backend(backend_schema: schemathesis.BaseSchema) -> None:
    failures = fuzz(backend_schema)
    assert not failures, "\n\n".join(failures)


def test_schemas_are_not_empty(
    ml_api_schema: schemathesis.BaseSchema, backend_schema: schemathesis.BaseSchema
) -> None:
    assert "/embed" in ml_api_schema.raw_schema["paths"]
    assert "/query" in backend_schema.raw_schema["paths"]


def test_backend_absurd_offset_is_422(backend_url: str) -> None:
    # The case schemathesis found (issue 14): a 500 before, a 422 naming the field now.
    r = httpx.get(
        f"{backend_url}/documents",
        params={"limit": 58, "offset": 12026484359819667871629312},
        timeout=30,
    )
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith("offset")


def test_backend_declares_auth_only_when_a_key_is_set(
    backend_schema: schemathesis.BaseSchema, ml_api: str, tmp_path: Path
) -> None:
    spec = backend_schema.raw_schema
    assert not any("security" in op for item in spec["paths"].values() for op in item.values())
    backend = launch_backend(
        tmp_path / "data", tmp_path / "backend.log", ml_api_url=ml_api, api_key="k3y"
    )
    try:
        keyed = schemathesis.openapi.from_url(f"{backend.url}/openapi.json")
        assert keyed.raw_schema["paths"]["/documents"]["get"]["security"] == [{"HTTPBearer": []}]
        for path in ("/documents", "/reindex"):
            case = keyed[path]["GET"].Case(headers={"Authorization": "Bearer k3y"})
            # ignored_auth re-sends without the key and with a wrong one: both must be 401.
            case.call_and_validate(checks=[ignored_auth, not_a_server_error], timeout=60)
    finally:
        backend.stop()
