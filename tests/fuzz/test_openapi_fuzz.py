"""Schemathesis against the OpenAPI document of a real server: no input may cause a 500.

Every documented operation gets requests generated from its schema (valid ones and, through
schemathesis's negative mode, invalid ones) with an admin key, sent over loopback to a
`stellwerk serve` process. Any 5xx fails the test, and every error answer must be Stellwerk's
JSON error body.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.core.result import Ok
from schemathesis.generation import GenerationMode
from tests.cli.server import running_server
from tests.conftest import free_port

pytestmark = pytest.mark.slow  # starts processes

EXAMPLES_PER_OPERATION = 20


def test_no_generated_request_makes_the_server_fail(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_server(data, free_port(), "--tenant-request-rate", "0") as server:
        key = json.loads((data / "bootstrap.json").read_text())["admin_key"]
        headers = {"Authorization": f"Bearer {key}"}
        schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
        schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
        failures: list[str] = []
        statuses: dict[int, int] = {}
        operations = []
        for result in schema.get_all_operations():
            assert isinstance(result, Ok), f"schemathesis cannot read an operation: {result}"
            operations.append(result.ok())
        assert len(operations) >= 20

        for operation in operations:

            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy())
            def call(case: Any) -> None:
                response = case.call(base_url=server.url, headers=headers, timeout=30)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                where = f"{case.method} {case.formatted_path} -> {response.status_code}"
                if response.status_code >= 500 and response.status_code != 503:
                    failures.append(f"{where}: {response.text[:300]}")
                elif response.status_code >= 400:
                    body = response.json()
                    if not isinstance(body.get("error"), str) or not body.get("message"):
                        failures.append(f"{where}: not an error body: {response.text[:300]}")

            call()
        assert failures == []
        # Not hollow: many requests went out, and both successes and refusals came back.
        assert sum(statuses.values()) >= 5 * len(operations), statuses
        assert any(200 <= s < 300 for s in statuses), statuses
        assert any(400 <= s < 500 for s in statuses), statuses
        assert (server.wait_until("/readyz", 200)).status_code == 200
