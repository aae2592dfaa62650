"""Fuzz every route from the app's own OpenAPI schema (schemathesis, in-process ASGI): no input
makes the server answer 5xx, and every error is a JSON ``{"error": ...}``. The write routes are
fuzzed behind an API key the fuzzer does not have (so random paths on this machine are never
indexed): they must still answer 4xx."""

from __future__ import annotations

import shutil

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from server_fakes import FakeEncoder

from lexlens.server.app import create_app
from lexlens.server.backend import Backend

#: examples per operation: bounded so the whole test takes seconds
EXAMPLES = 60


@pytest.fixture(scope="module")
def fuzz_schema(built, tmp_path_factory):
    copy = tmp_path_factory.mktemp("fuzz") / "idx"
    shutil.copytree(built[0], copy)
    backend = Backend.open([copy], names=["pics"], encoder=FakeEncoder())
    app = create_app(backend, api_key="not-given-to-the-fuzzer")
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_no_input_gives_a_server_error(fuzz_schema):
    seen = []
    for result in fuzz_schema.get_all_operations():
        operation = result.ok()
        seen.append(f"{operation.method.upper()} {operation.path}")

        strategies = [operation.as_strategy(mode) for mode in GenerationMode]
        names = {p for p in ("index", "name") if "{" + p + "}" in operation.path}
        if names:  # also with the served index's name, to reach past the 404
            strategies.append(operation.as_strategy(path_parameters=dict.fromkeys(names, "pics")))

        @given(case=st.one_of(strategies))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case):
            response = case.call_and_validate(checks=[not_a_server_error])
            if response.status_code >= 400:
                assert "error" in response.json(), response.text

        fuzz()
    assert {"POST /search", "POST /search/upload", "POST /knn-service", "DELETE /items"} <= set(
        seen
    )
