"""Property-based requests generated from each service's own OpenAPI schema (schemathesis):
whatever a client sends, schemathesis' own default checks pass (no 5xx, responses and status
codes as documented, invalid data refused, ...), for valid and for invalid generated data."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    ignored_auth,
    negative_data_rejection,
    positive_data_acceptance,
    response_schema_conformance,
)
from stack import ROOT

sys.path.insert(0, str(ROOT / "tests" / "backend"))
from backend_support import launch_backend

# The release's default checks, less three that still fail on open findings (issue 14, item 8):
# - positive_data_acceptance: the specs do not yet mark request bodies as required, so a POST
#   without a body is "schema-valid" and our 422 counts against us; empty `documents` likewise;
# - ignored_auth, and negative_data_rejection (which reads a request without `Authorization` as
#   invalid): the backend spec declares the bearer header required even when no key is set;
# - response_schema_conformance on invalid data: the backend's 422 body is `{"detail": str}`
#   while FastAPI's generated schema says a list (valid data is still checked against it).
# None of them is a server error: `not_a_server_error` and the rest run everywhere.
EXCLUDED = {
    GenerationMode.POSITIVE: [positive_data_acceptance, ignored_auth],
    GenerationMode.NEGATIVE: [
        positive_data_acceptance,
        ignored_auth,
        negative_data_rejection,
        response_schema_conformance,
    ],
}

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
            @given(
                case=operation.as_strategy(generation_mode=mode), excluded=st.just(EXCLUDED[mode])
            )
            def run(case: schemathesis.Case, excluded: list) -> None:
                # No `checks=`: the release's default set, less the open findings above.
                case.call_and_validate(excluded_checks=excluded, timeout=60)

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
