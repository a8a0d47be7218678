"""The `function` target: hand each event to a Python callable named `module:function`.

The callable gets the decoded payload (the event as a dict, or whatever JSON the input
transformer made; text for `text/plain`). Async functions are awaited on the event loop; plain
functions run in a worker thread so they cannot stall it. Either way at most `concurrency` calls
run at once. Returning is success; raising is a retryable failure whose reason is the exception.
Functions run in the Stellwerk process and are trusted code: there is no timeout, because a
thread cannot be stopped, and a slot given back early would let more calls run than allowed.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Callable
from typing import Any, Final

import msgspec

from stellwerk.delivery.model import Delivered, GiveUp, Outcome, RetryLater
from stellwerk.rules import InvalidTargetError
from stellwerk.seams import Delivery

DEFAULT_CONCURRENCY: Final = 8
MAX_CONCURRENCY: Final = 256
_decoder = msgspec.json.Decoder()


def resolve_function(spec: str) -> Callable[..., Any]:
    """The callable `spec` names (`package.module:name` or `module:Class.method`).

    Raises `InvalidTargetError` (field `function`) saying what is wrong: the form, a module that
    cannot be imported (and why), a missing attribute, or something that is not callable.
    """
    module_name, sep, qualname = spec.partition(":")
    if not sep or not module_name or not qualname:
        raise InvalidTargetError("function", f"{spec!r} is not of the form 'module:function'")
    try:
        found: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise InvalidTargetError("function", f"no module named {module_name!r}") from exc
        raise InvalidTargetError("function", f"importing {module_name!r} failed: {exc}") from exc
    except Exception as exc:
        raise InvalidTargetError(
            "function", f"importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    for part in qualname.split("."):
        try:
            found = getattr(found, part)
        except AttributeError as exc:
            raise InvalidTargetError(
                "function", f"module {module_name!r} has no {qualname!r}"
            ) from exc
    if not callable(found):
        raise InvalidTargetError("function", f"{spec!r} is a {type(found).__name__}, not callable")
    function: Callable[..., Any] = found
    return function


class FunctionTarget:
    """Calls one imported function per delivery, at most `concurrency` at a time."""

    def __init__(self, spec: str, *, concurrency: int = DEFAULT_CONCURRENCY) -> None:
        if not 1 <= concurrency <= MAX_CONCURRENCY:
            raise InvalidTargetError("concurrency", f"must be 1 to {MAX_CONCURRENCY}")
        self.spec = spec
        self.function = resolve_function(spec)
        self._is_async = inspect.iscoroutinefunction(self.function)
        self.concurrency = concurrency
        self._semaphore = asyncio.Semaphore(concurrency)

    async def deliver(self, delivery: Delivery) -> Outcome:
        try:
            argument = _decode(delivery)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            return GiveUp(f"payload is not {delivery.content_type}: {exc}")
        async with self._semaphore:
            try:
                if self._is_async:
                    result = await self.function(argument)
                else:
                    result = await asyncio.to_thread(self.function, argument)
                    if inspect.isawaitable(result):
                        result = await result
            except Exception as exc:
                return RetryLater(f"{self.spec} raised {type(exc).__name__}: {exc}")
        return Delivered(f"{self.spec} returned {type(result).__name__}")

    async def close(self) -> None:
        """Imported modules stay imported; there is nothing to release."""

    def __repr__(self) -> str:
        return f"FunctionTarget({self.spec!r}, concurrency={self.concurrency})"


def _decode(delivery: Delivery) -> Any:
    if delivery.content_type == "text/plain":
        return delivery.payload.decode()
    return _decoder.decode(delivery.payload)
