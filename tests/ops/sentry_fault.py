"""Run by tests/ops/test_sentry.py in a process of its own (Sentry's SDK is process-global):
a real app with `start_error_tracking`, whose ingest fails inside with a fault that has the
request's key in its message and the event's payload in its frame's variables.

Usage: python sentry_fault.py DSN DATA_DIR MARKER
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import sentry_sdk

from stellwerk.app import build_app
from stellwerk.config import load_settings
from stellwerk.ops import configure_logging, start_error_tracking
from stellwerk.service import Ingest


async def broken_put(
    self: Ingest, principal: Any, bus: str, ct: Any, headers: Any, body: Any, **options: Any
) -> Any:
    payload = await body()  # a local variable holding the event, as real code would have
    raise RuntimeError(f"cannot store {len(payload)} bytes for {headers.get('authorization')}")


async def main(dsn: str, data_dir: str, marker: str) -> None:
    configure_logging("info", "json")
    start_error_tracking(dsn, "gateway")
    Ingest.put = broken_put  # type: ignore[method-assign,assignment]
    app = build_app(load_settings({"data_dir": data_dir}))
    async with app.router.lifespan_context(app):
        await asyncio.wait_for(app.state.lifecycle.wait_started(), 30)
        key = json.loads((Path(data_dir) / "bootstrap.json").read_text())["ingest_key"]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://s") as client:
            answer = await client.post(
                "/v1/buses/default/events",
                json={
                    "specversion": "1.0",
                    "id": "e1",
                    "source": "urn:t",
                    "type": "t",
                    "data": {"secret_note": marker},
                },
                headers={"Authorization": f"Bearer {key}", "Cookie": f"session={marker}"},
            )
            print(json.dumps({"status": answer.status_code, "key": key}))
    sentry_sdk.flush(10)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
