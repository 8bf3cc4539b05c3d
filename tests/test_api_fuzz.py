"""The collector's HTTP API fuzzed from its own OpenAPI document: no input makes it answer 5xx.

schemathesis (v4) reads /openapi.json from a real collector process over HTTPS (its CA pinned),
generates requests for every operation the document lists (valid and invalid ones, with an API
key so the authenticated routes are reached past the 401), and checks each answer is not a
server error. A bounded number of examples per operation keeps the file under a minute; the
seed is fixed so a failure reproduces. Nothing is excluded: the routes that read their body
raw (ingest, door people/cards/levels/holidays/templates, snapshots) declare it in the document
(openapi_extra), so they get generated and malformed bodies too. Hypothesis drives each operation's
strategy directly: schemathesis.pytest.from_fixture reads Function._nodeid, gone in pytest 9.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from collector_process import CollectorProcess
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup

from floor_agent.audit.forwarder import pinned_client

EXAMPLES_PER_OPERATION = 70


@pytest.fixture(scope="module")
def fuzzed_collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    proc = CollectorProcess(tmp_path_factory.mktemp("fuzz"))
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def api_key(fuzzed_collector: CollectorProcess) -> str:
    return fuzzed_collector.api_key("fuzz")


@pytest.fixture
def api_schema(fuzzed_collector: CollectorProcess, api_key: str) -> Any:
    """The live document, with the base URL, the pinned CA and the API key to call it with."""
    with pinned_client(fuzzed_collector.url, fuzzed_collector.ca, 10.0) as client:
        answer = client.get("/openapi.json")
    assert answer.status_code == 200, answer.text
    schema = schemathesis.openapi.from_dict(answer.json())
    schema.config.update(base_url=fuzzed_collector.url, tls_verify=str(fuzzed_collector.ca),
                         headers={"Authorization": f"Bearer {api_key}"})
    return schema


def fuzz_operation(operation: Any, mode: GenerationMode, failures: dict[str, str],
                   answered: Counter[str]) -> None:
    """Up to EXAMPLES_PER_OPERATION generated requests against one operation; the first
    request of each (operation, status) that got a server error is kept, to be reproduced;
    `answered` counts "METHOD PATH STATUS"."""

    @seed(20261129)
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        response = case.call(timeout=30)
        answered[f"{case.method} {operation.path} {response.status_code}"] += 1
        try:
            case.validate_response(response, checks=[schemathesis.checks.not_a_server_error])
        except FailureGroup:
            where = f"{case.method} {operation.path} -> {response.status_code}"
            failures.setdefault(where, f"{case.as_curl_command()}: {response.text[:200]}")

    try:
        run()
    except Unsatisfiable:
        # An operation without parameters or body (GET /healthz) has no invalid input to make
        if mode is GenerationMode.POSITIVE:
            raise


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                         ids=["valid", "invalid"])
def test_no_input_makes_the_api_answer_5xx(api_schema: Any, mode: GenerationMode,
                                           fuzzed_collector: CollectorProcess) -> None:
    failures: dict[str, str] = {}
    answered: Counter[str] = Counter()
    operations = [result.ok() for result in api_schema.get_all_operations()]
    for operation in operations:
        fuzz_operation(operation, mode, failures, answered)
    assert failures == {}
    assert fuzzed_collector.proc is not None and fuzzed_collector.proc.poll() is None
    called = {key.rsplit(" ", 1)[0] for key in answered}
    if mode is GenerationMode.POSITIVE:
        # every operation was called, and the API key got requests past authentication
        assert called == {f"{op.method.upper()} {op.path}" for op in operations}
        assert answered["GET /api/v1/events 200"] > 0, answered
    else:
        # invalid input exists only where the document declares some: the routes that read a
        # raw body declare it too (openapi_extra), so they get malformed bodies as well
        assert {"GET /api/v1/events", "POST /api/v1/enroll",
                "POST /api/v1/alerts/{alert_id}/ack", "POST /api/v1/ingest",
                "POST /api/v1/people", "POST /api/v1/cards", "POST /api/v1/levels",
                "POST /api/v1/holidays", "POST /api/v1/templates",
                "POST /api/v1/snapshots/{camera}"} <= called, called


def test_the_document_lists_the_agent_and_audit_routes(api_schema: Any) -> None:
    """Guards the fuzz test against fuzzing nothing (an empty or unreachable document), and
    against routes that read a raw body hiding it (schemathesis would send them none)."""
    operations = {f"{op.ok().method.upper()} {op.ok().path}": op.ok()
                  for op in api_schema.get_all_operations()}
    assert {"POST /api/v1/ingest", "POST /api/v1/enroll", "GET /api/v1/events",
            "POST /api/v1/alerts/{alert_id}/ack"} <= set(operations)
    raw = {"POST /api/v1/ingest": "application/json", "POST /api/v1/people": "application/json",
           "POST /api/v1/cards": "application/json", "POST /api/v1/levels": "application/json",
           "POST /api/v1/holidays": "application/json",
           "POST /api/v1/templates": "application/json",
           "POST /api/v1/snapshots/{camera}": "image/jpeg"}
    declared = {name: [body.media_type for body in operations[name].body]
                for name in raw if name in operations}
    assert declared == {name: [media] for name, media in raw.items()}, declared


def test_the_collector_log_holds_no_traceback(fuzzed_collector: CollectorProcess) -> None:
    """An exception caught by the 500 handler would also be a server error; none was logged."""
    lines = fuzzed_collector.log_path.read_text().splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback")]
    if starts:  # show the first one: its last frame and the exception line
        block = lines[starts[0]:]
        end = next((i for i, line in enumerate(block[1:], 1) if not line.startswith(" ")), 0)
        raise AssertionError("collector logged a traceback:\n" + "\n".join(block[:end + 1][-5:]))
