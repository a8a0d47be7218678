"""Quotas as a running server enforces them: set on the command line beside it, counts refused
on create, and rates shared through Redis by two gateways of one installation."""

from __future__ import annotations

import asyncio
import base64
import itertools
import subprocess
from pathlib import Path
from typing import Any

import httpx
import msgspec
import redis
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from click.testing import CliRunner, Result
from tests.cli.server import STELLWERK
from tests.conftest import RunningApp, app_running
from tests.polling import eventually
from tests.quotas.conftest import REDIS_PORT
from tests.tcp_proxy import TcpProxy
from tests.tracking.support import make_source

from stellwerk.cli.tenants import tenants
from stellwerk.config import load_settings
from stellwerk.ratelimit import SharedLimiter
from stellwerk.refs import BusRef, TenantName

EVENTS = "/v1/buses/default/events"
_ids = itertools.count()


def event() -> dict[str, Any]:
    return {"specversion": "1.0", "id": f"e-{next(_ids)}", "source": "s", "type": "t"}


def limits_process(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`stellwerk tenants limits` as the operator runs it: a process of its own."""
    return subprocess.run(
        [STELLWERK, "tenants", "limits", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def limits(data_dir: Path, *args: str) -> Result:
    """The same command run in this process (a process start costs seconds)."""
    return CliRunner().invoke(tenants, ["limits", *args, "--data-dir", str(data_dir)])


async def ingest(app: RunningApp) -> httpx.Response:
    return await app.client.post(EVENTS, json=[event()], headers=app.auth(app.bootstrap.ingest_key))


async def test_limits_set_on_the_command_line_reach_a_running_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    # The servers re-read a tenant's limits after --key-cache-seconds: 1 s here.
    settings = load_settings({"data_dir": str(data), "key_cache_seconds": 1})
    async with app_running(settings) as app:
        assert (await ingest(app)).status_code == 202

        # 0.001 events/s: a burst of one event, then none for 1000 s.
        done = await asyncio.to_thread(
            limits_process, data, "default", "--events-per-second", "0.001"
        )
        assert done.returncode == 0, done.stderr
        assert "events-per-second: 0.001" in done.stdout
        refused = await eventually(
            lambda: ingest(app), accept=lambda r: r.status_code == 429, within=15
        )
        assert "event rate limit (0.001/s)" in refused.json()["message"]

        changed = await asyncio.to_thread(limits, data, "default", "--requests-per-second", "0.001")
        assert changed.exit_code == 0, changed.output

        async def buses() -> httpx.Response:
            return await app.client.get("/v1/buses", headers=app.admin)

        refused = await eventually(buses, accept=lambda r: r.status_code == 429, within=15)
        assert "request rate limit (0.001/s)" in refused.json()["message"]
        refused = await ingest(app)  # the fast path of ingest takes the request's token too
        assert refused.status_code == 429
        assert "request rate limit (0.001/s)" in refused.json()["message"]

        shown = await asyncio.to_thread(limits, data, "default", "--json")
        assert '"events_per_second":0.001' in shown.stdout
        assert '"requests_per_second":0.001' in shown.stdout

        changed = await asyncio.to_thread(limits, data, "default", "--clear")
        assert changed.exit_code == 0, changed.output
        await eventually(buses, accept=lambda r: r.status_code == 200, within=5)
        assert (await ingest(app)).status_code == 202


def test_bad_limits_on_the_command_line_are_told_plainly(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert (
        limits(data, "nobody", "--buses", "2")
        .stderr.strip()
        .endswith("tenant 'nobody' does not exist")
    )
    cases = {
        ("--events-per-second", "fast"): "'fast' is not a number",
        ("--events-per-second", "-5"): "must be a number above 0",
        ("--requests-per-second", "inf"): "must be a number above 0",
        ("--buses", "0"): "must be 1 or more",
        ("--rules", "2.5"): "'2.5' is not a whole number",
        ("--rules", "3", "--unset", "rules"): "--rules is both set and unset",
        ("--clear", "--buses", "3"): "--clear clears every limit",
        ("--unset", "colour"): "Invalid value for '--unset'",
    }
    for args, message in cases.items():
        done = limits(data, "default", *args)
        assert done.exit_code == 2, (args, done.output)
        assert message in done.stderr, (args, done.stderr)
        assert done.exception is None or isinstance(done.exception, SystemExit)


async def test_counts_are_refused_on_create_naming_the_tenants_quota(tmp_path: Path) -> None:
    settings = load_settings({"data_dir": str(tmp_path / "data")})
    async with app_running(settings) as app:
        quotas = app.services.platform.quotas
        await quotas.update("default", {"buses": 2, "rules": 1})
        assert (await app.client.put("/v1/buses/second", headers=app.admin, json={})).is_success
        third = await app.client.put("/v1/buses/third", headers=app.admin, json={})
        assert third.status_code == 409
        assert third.json()["message"] == (
            "the tenant already has 2 buses (limit 2, the tenant's quota)"
        )
        rule = {"pattern": {"source": ["s"]}, "targets": []}
        put = await app.client.put("/v1/buses/default/rules/a", headers=app.admin, json=rule)
        assert put.is_success, put.text
        second = await app.client.put("/v1/buses/default/rules/b", headers=app.admin, json=rule)
        assert second.status_code == 409
        assert "already has 1 rules (limit 1, the tenant's quota)" in second.json()["message"]
        # Replacing a rule that exists is no new rule; raising the quota lets the next in.
        assert (
            await app.client.put("/v1/buses/default/rules/a", headers=app.admin, json=rule)
        ).is_success
        await quotas.update("default", {"rules": None})
        assert (
            await app.client.put("/v1/buses/default/rules/b", headers=app.admin, json=rule)
        ).is_success


def shared_limiter(app: RunningApp) -> SharedLimiter:
    limiter = app.services.platform.quotas.limiter
    assert isinstance(limiter, SharedLimiter)
    return limiter


async def test_two_gateways_with_redis_share_one_budget_and_survive_its_outage(
    tmp_path: Path, redis_url: str
) -> None:
    first_settings = load_settings({"data_dir": str(tmp_path / "first"), "redis_url": redis_url})
    async with app_running(first_settings) as first:
        await first.services.platform.quotas.update("default", {"events_per_second": 0.001})
        # The second gateway: the same control plane (so the same tenant), its Redis through
        # a relay this test cuts.
        (tmp_path / "second").mkdir()
        (tmp_path / "second" / "bootstrap.json").write_bytes(
            (tmp_path / "first" / "bootstrap.json").read_bytes()
        )
        with TcpProxy(REDIS_PORT) as proxy:
            second_settings = load_settings(
                {
                    "data_dir": str(tmp_path / "second"),
                    "database_url": first_settings.control_database_url,
                    "redis_url": f"redis://127.0.0.1:{proxy.port}/0",
                }
            )
            async with app_running(second_settings, alone=False) as second:
                # A burst of one event for the tenant, whichever gateway it arrives at.
                assert (await ingest(first)).status_code == 202
                refused = await ingest(second)
                assert refused.status_code == 429, refused.text
                assert (await ingest(first)).status_code == 429

                # Redis out of reach: the second gateway limits on its own and fails nothing.
                proxy.cut()
                answer = await ingest(second)
                assert answer.status_code == 202, (answer.text, shared_limiter(second).shared)
                assert (await ingest(second)).status_code == 429  # its own budget is spent
                metrics = (await second.client.get("/metrics")).text
                assert "stellwerk_ratelimit_shared 0.0" in metrics
                assert "stellwerk_ratelimit_redis_errors_total 1.0" in metrics

                proxy.restore()
                limiter = shared_limiter(second)

                async def recovered() -> bool:
                    answer = await ingest(second)
                    assert answer.status_code == 429  # spent in Redis as in the process
                    return limiter.shared

                await eventually(recovered, within=15)
                metrics = (await second.client.get("/metrics")).text
                assert "stellwerk_ratelimit_shared 1.0" in metrics


async def test_an_ingest_request_is_one_round_trip_to_redis(tmp_path: Path, own_redis: int) -> None:
    settings = load_settings(
        {"data_dir": str(tmp_path / "data"), "redis_url": f"redis://127.0.0.1:{own_redis}/0"}
    )
    watcher = redis.Redis(port=own_redis)
    try:
        async with app_running(settings) as app:
            # At 60 requests/s a lease would be 3 tokens, too few to hold (LEASE_LEAST): every
            # request asks Redis, so the calls can be counted (leases: test_limiter.py).
            await app.services.platform.quotas.update("default", {"requests_per_second": 60})
            assert (await ingest(app)).status_code == 202  # loads the script
            before = scripts_run(watcher)
            for _ in range(10):
                sent = await app.client.post(
                    EVENTS,
                    json=[event() for _ in range(5)],
                    headers=app.auth(app.bootstrap.ingest_key),
                )
                assert sent.status_code == 202
            # The request's token and the events' in one script call per request.
            assert scripts_run(watcher) - before == 10
            missing = await app.client.post(
                "/v1/buses/nowhere/events",
                json=[event()],
                headers=app.auth(app.bootstrap.ingest_key),
            )
            assert missing.status_code == 404
            assert scripts_run(watcher) - before == 11  # a refused request costs its token too

            # PutEvents (signed as boto3 signs) and a Segment batch: one script call each too.
            key = app.bootstrap.ingest_key
            source_key = await make_source(app.client, app.admin)
            before = scripts_run(watcher)
            for _ in range(5):
                answer = await put_events(app, key, [entry() for _ in range(3)])
                assert answer.status_code == 200, answer.text
                assert answer.json()["FailedEntryCount"] == 0
                batch = [{"type": "track", "userId": "u", "event": "e"} for _ in range(3)]
                answer = await app.client.post(
                    "/v1/batch", headers=basic(source_key), json={"batch": batch}
                )
                assert answer.status_code == 200, answer.text
            assert scripts_run(watcher) - before == 10
            # Refused before any event's turn, each still costs its request token (one call).
            answer = await put_events(app, key, [entry("nowhere")])
            assert answer.json()["Entries"][0]["ErrorCode"] == "ResourceNotFoundException"
            answer = await app.client.post(
                "/v1/batch", headers=basic(source_key), json={"batch": [{"type": "boom"}]}
            )
            assert answer.status_code == 400, answer.text
            assert scripts_run(watcher) - before == 12
    finally:
        watcher.close()


async def test_the_request_rate_refuses_put_events_and_segment_batches_as_a_whole(
    tmp_path: Path,
) -> None:
    async with app_running(load_settings({"data_dir": str(tmp_path / "data")})) as app:
        key = app.bootstrap.ingest_key
        source_key = await make_source(app.client, app.admin)
        await app.services.platform.quotas.update("default", {"requests_per_second": 0.001})
        # A burst of one request: PutEvents takes it (with its events, one call) ...
        answer = await put_events(app, key, [entry()])
        assert answer.status_code == 200, answer.text
        # ... then the call as a whole is throttled, and so is a Segment batch.
        refused = await put_events(app, key, [entry(), entry()])
        assert refused.status_code == 400, refused.text
        assert refused.json()["__type"] == "ThrottlingException"
        assert "request rate limit (0.001/s)" in refused.json()["message"]
        batch = {"batch": [{"type": "track", "userId": "u", "event": "e"}]}
        answer = await app.client.post("/v1/batch", headers=basic(source_key), json=batch)
        assert answer.status_code == 429, answer.text
        assert "request rate limit (0.001/s)" in answer.text
        # A call refused before its events' turn is refused for the rate the same way.
        refused = await put_events(app, key, [entry("nowhere")])
        assert refused.json()["__type"] == "ThrottlingException", refused.text
        on_bus = await app.services.stores.event_log.read(BusRef(TenantName("default"), "default"))
        assert len(on_bus) == 1


def entry(bus: str = "default") -> dict[str, str]:
    return {"Source": "s", "DetailType": "t", "Detail": "{}", "EventBusName": bus}


async def put_events(app: RunningApp, key: str, entries: list[dict[str, str]]) -> httpx.Response:
    """A PutEvents call signed by botocore's own SigV4 signer with `key`."""
    body = msgspec.json.encode({"Entries": entries})
    headers = {"X-Amz-Target": "AWSEvents.PutEvents", "Content-Type": "application/x-amz-json-1.1"}
    request = AWSRequest(method="POST", url=f"{app.client.base_url}/", data=body, headers=headers)
    SigV4Auth(Credentials(key.split("_")[1], key), "events", "eu-central-1").add_auth(request)
    return await app.client.post("/", content=body, headers=dict(request.headers.items()))


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def scripts_run(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(
        int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval")
    )
