"""The function target calls real imported modules; the log target writes structured lines."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
from tests.delivery.targets.support import make_delivery

from stellwerk.delivery.model import Delivered, GiveUp, RetryLater
from stellwerk.delivery.targets import FunctionTarget, LogTarget, resolve_function
from stellwerk.rules import InvalidTargetError

HANDLERS = """
import asyncio
import threading

received = []
in_flight = 0
most = 0
lock = threading.Lock()
gate = threading.Event()

def on_order(event):
    received.append(("sync", event))
    return "ok"

async def on_order_async(event):
    await asyncio.sleep(0)
    received.append(("async", event))

def fails(event):
    raise ValueError(f"no stock for {event['id']}")

async def fails_async(event):
    raise ConnectionError("crm unreachable")

def bounded(event):
    global in_flight, most
    with lock:
        in_flight += 1
        most = max(most, in_flight)
        if in_flight == 2:
            gate.set()
    gate.wait(30)
    with lock:
        in_flight -= 1

class Handlers:
    @staticmethod
    def nested(event):
        received.append(("nested", event))

not_callable = 42
"""


@pytest.fixture
def handlers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A real module on sys.path, imported by name like an operator's handler module."""
    name = f"stellwerk_test_handlers_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(HANDLERS))
    (tmp_path / "broken_handlers.py").write_text("import does_not_exist_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = resolve_function(f"{name}:on_order").__module__
    yield sys.modules[module]
    sys.modules.pop(module, None)
    sys.modules.pop("broken_handlers", None)


async def test_sync_function_gets_the_decoded_event(handlers: Any) -> None:
    target = FunctionTarget(f"{handlers.__name__}:on_order")
    outcome = await target.deliver(make_delivery())
    assert outcome == Delivered(f"{handlers.__name__}:on_order returned str")
    assert handlers.received == [
        ("sync", {"specversion": "1.0", "id": "ev-1", "source": "/shop", "type": "order.created"})
    ]


async def test_async_function_is_awaited(handlers: Any) -> None:
    target = FunctionTarget(f"{handlers.__name__}:on_order_async")
    assert isinstance(await target.deliver(make_delivery(b'{"n": 1}')), Delivered)
    assert handlers.received == [("async", {"n": 1})]


async def test_text_payloads_arrive_as_text(handlers: Any) -> None:
    target = FunctionTarget(f"{handlers.__name__}:Handlers.nested")
    delivery = make_delivery(b"Order 42 shipped", content_type="text/plain")
    assert isinstance(await target.deliver(delivery), Delivered)
    assert handlers.received == [("nested", "Order 42 shipped")]


@pytest.mark.parametrize(
    ("function", "reason"),
    [
        ("fails", "fails raised ValueError: no stock for ev-1"),
        ("fails_async", "fails_async raised ConnectionError: crm unreachable"),
    ],
)
async def test_an_exception_is_a_retryable_failure(
    handlers: Any, function: str, reason: str
) -> None:
    outcome = await FunctionTarget(f"{handlers.__name__}:{function}").deliver(make_delivery())
    assert isinstance(outcome, RetryLater)
    assert outcome.reason.endswith(reason)


async def test_a_payload_that_is_not_json_gives_up(handlers: Any) -> None:
    outcome = await FunctionTarget(f"{handlers.__name__}:on_order").deliver(make_delivery(b"{"))
    assert isinstance(outcome, GiveUp)
    assert handlers.received == []


async def test_sync_calls_are_bounded_by_the_concurrency(handlers: Any) -> None:
    target = FunctionTarget(f"{handlers.__name__}:bounded", concurrency=2)
    outcomes = await asyncio.gather(*(target.deliver(make_delivery()) for _ in range(6)))
    assert all(isinstance(outcome, Delivered) for outcome in outcomes)
    assert handlers.most == 2


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("no_colon_here", "form 'module:function'"),
        (":on_order", "form 'module:function'"),
        ("mod:", "form 'module:function'"),
        ("surely_not_a_module_xyz:f", "no module named 'surely_not_a_module_xyz'"),
        ("broken_handlers:f", "importing 'broken_handlers' failed"),
        ("{mod}:missing", "has no 'missing'"),
        ("{mod}:Handlers.missing", "has no 'Handlers.missing'"),
        ("{mod}:not_callable", "is a int, not callable"),
    ],
)
def test_save_time_errors_name_the_function_field(handlers: Any, spec: str, says: str) -> None:
    with pytest.raises(InvalidTargetError) as caught:
        resolve_function(spec.format(mod=handlers.__name__))
    assert caught.value.field == "function"
    assert says in caught.value.reason


def test_concurrency_is_checked(handlers: Any) -> None:
    with pytest.raises(InvalidTargetError) as caught:
        FunctionTarget(f"{handlers.__name__}:on_order", concurrency=0)
    assert caught.value.field == "concurrency"


async def test_log_target_writes_the_event_at_info() -> None:
    with structlog.testing.capture_logs() as lines:
        outcome = await LogTarget().deliver(make_delivery(attempts=2))
    assert outcome == Delivered("logged")
    [line] = lines
    assert line["log_level"] == "info"
    assert line["event"] == "delivered event"
    assert line["payload"]["type"] == "order.created"
    assert (line["tenant"], line["bus"], line["rule"], line["target"]) == (
        "acme",
        "default",
        "orders",
        "t1",
    )
    assert line["event_id"] == "ev-1"
    assert line["attempt"] == 3


async def test_log_target_writes_text_payloads_as_text() -> None:
    with structlog.testing.capture_logs() as lines:
        await LogTarget().deliver(make_delivery(b"plain words", content_type="text/plain"))
    assert lines[0]["payload"] == "plain words"
