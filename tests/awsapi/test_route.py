"""A call that reaches the app instead of the fast path (here: under a root path, which the
fast path leaves alone) is answered by the Starlette route, the same way and with the same
function: signature, errors and all."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import msgspec
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from tests.conftest import Bootstrap

from stellwerk.app import build_app
from stellwerk.config import load_settings


def signed(url: str, key: str, operation: str, params: dict[str, object]) -> AWSRequest:
    request = AWSRequest(
        method="POST",
        url=url,
        data=json.dumps(params).encode(),
        headers={
            "X-Amz-Target": f"AWSEvents.{operation}",
            "Content-Type": "application/x-amz-json-1.1",
        },
    )
    SigV4Auth(Credentials(key.split("_")[1], key), "events", "eu-central-1").add_auth(request)
    return request


async def test_the_route_answers_as_the_fast_path_does(tmp_path: Path) -> None:
    settings = load_settings({"data_dir": str(tmp_path / "data")})
    app = build_app(settings)
    async with app.router.lifespan_context(app):
        await asyncio.wait_for(app.state.lifecycle.wait_started(), 30)
        key = msgspec.json.decode(
            (settings.data_dir / "bootstrap.json").read_bytes(), type=Bootstrap
        ).admin_key
        for root in ("", "/aws"):  # the fast path's, then the route's
            transport = httpx.ASGITransport(app=app, root_path=root)
            async with httpx.AsyncClient(transport=transport) as client:
                url = f"http://stellwerk{root}/"
                request = signed(url, key, "ListEventBuses", {})
                listed = await client.post(url, content=request.body, headers=dict(request.headers))
                assert listed.status_code == 200, (root, listed.text)
                assert listed.headers["content-type"] == "application/x-amz-json-1.1"
                assert listed.headers["x-amzn-requestid"]
                assert [b["Name"] for b in listed.json()["EventBuses"]] == ["default"]

                request = signed(url, key + "x", "ListEventBuses", {})
                refused = await client.post(
                    url, content=request.body, headers=dict(request.headers)
                )
                assert refused.status_code == 400, root
                assert refused.json()["__type"] == "InvalidSignatureException"
                assert refused.headers["x-amzn-errortype"] == "InvalidSignatureException"

                request = signed(url, key, "PutEvents", {"Entries": []})
                invalid = await client.post(
                    url, content=request.body, headers=dict(request.headers)
                )
                assert invalid.json()["__type"] == "ValidationException", root
