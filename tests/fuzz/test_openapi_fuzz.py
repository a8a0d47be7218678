"""Schemathesis against the OpenAPI document of a real server, with every check it has.

Every documented operation gets requests generated from its schema (valid ones and, through
schemathesis's negative mode, invalid ones) with an admin key, sent over loopback to a
`stellwerk serve` process. Each answer goes through all of schemathesis's checks: no 5xx, every
answer as documented (status, content type, body schema), schema-valid requests accepted and
schema-violating ones refused, no answer without the key it needs. The few exceptions are in the
repository's `schemathesis.toml`, each with its reason; every error must also be Stellwerk's JSON
error body.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok
from schemathesis.generation import GenerationMode
from tests.cli.server import running_server
from tests.conftest import free_port

pytestmark = pytest.mark.slow  # starts processes

# Bounded for the suite's time budget (docs/openapi.md has the figures); a deeper run is
# `schemathesis --config-file schemathesis.toml run` against a server (same exceptions).
EXAMPLES_PER_OPERATION = 20
CONFIG = Path(__file__).resolve().parents[2] / "schemathesis.toml"


# Its work is bounded (20 examples for each of ~150 operations): 35 s on a quiet machine, and past
# the suite's 120 s hang guard when five other sessions' tests share the 2 cores.
@pytest.mark.timeout(400)
def test_generated_requests_find_no_mismatch_between_document_and_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_server(data, free_port(), "--tenant-request-rate", "0") as server:
        key = json.loads((data / "bootstrap.json").read_text())["admin_key"]
        headers = {"Authorization": f"Bearer {key}"}
        schema = schemathesis.openapi.from_url(
            f"{server.url}/openapi.json", config=SchemathesisConfig.from_path(CONFIG)
        )
        schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
        failures: list[str] = []
        statuses: dict[int, int] = {}
        operations = []
        for result in schema.get_all_operations():
            assert isinstance(result, Ok), f"schemathesis cannot read an operation: {result}"
            operations.append(result.ok())
        assert len(operations) >= 80

        for operation in operations:

            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                # The same requests on every run: CI must not fail on a draw it never made
                # before. Exploring further is the by-hand run's job (docs/openapi.md).
                derandomize=True,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy())
            def call(case: Any) -> None:
                try:
                    # No `checks=`: every check the configuration leaves on for the operation.
                    response = case.call_and_validate(
                        base_url=server.url, headers=headers, timeout=30
                    )
                except FailureGroup as group:
                    where = f"{case.method} {case.formatted_path}"
                    failures.extend(
                        f"{where}: {failure.title}: {failure.message[:300]}"
                        for failure in group.exceptions
                    )
                    return
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                if response.status_code >= 400:
                    body = response.json()
                    if not isinstance(body.get("error"), str) or not body.get("message"):
                        where = f"{case.method} {case.formatted_path} -> {response.status_code}"
                        failures.append(f"{where}: not an error body: {response.text[:300]}")

            call()
        assert failures == []
        # Not hollow: many requests went out, and both successes and refusals came back.
        assert sum(statuses.values()) >= 5 * len(operations), statuses
        assert any(200 <= s < 300 for s in statuses), statuses
        assert any(400 <= s < 500 for s in statuses), statuses
        assert (server.wait_until("/readyz", 200)).status_code == 200
