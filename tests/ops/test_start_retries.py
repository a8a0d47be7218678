"""A process whose stores are out of reach at start retries with backoff, and says so once (and
a reminder a minute), not once per attempt; the probes give the reason meanwhile."""

from __future__ import annotations

from pathlib import Path

import httpx
import structlog
from tests import polling
from tests.conftest import free_port

from stellwerk.app import build_app
from stellwerk.config import load_settings


async def test_a_start_that_keeps_failing_is_one_line_and_the_probe_gives_the_reason(
    tmp_path: Path,
) -> None:
    nowhere = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/stellwerk"  # no server
    app = build_app(load_settings({"data_dir": str(tmp_path / "data"), "database_url": nowhere}))
    lifecycle = app.state.lifecycle
    with structlog.testing.capture_logs() as lines:
        async with app.router.lifespan_context(app):
            await polling.eventually(lambda: lifecycle.failed_starts >= 5, within=60)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://s") as client:
                answer = await client.get("/startupz")
    assert answer.status_code == 503
    assert answer.json()["status"] == "starting"
    assert answer.json()["reason"] == lifecycle.last_start_error
    events = [line["event"] for line in lines if "start" in str(line["event"])]
    assert events == ["start failed, retrying"], lines
