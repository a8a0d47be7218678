"""Changes of configuration, announced by the control plane once the write that made them commits.

A store that writes something other processes cache (rules, buses, keys, ...) names the `Change`
inside its transaction; the listeners hear it after the commit, and a transaction that rolls back
tells nobody. So no caller can forget to announce a change, nor announce one that did not happen.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from stellwerk.seams import Change

ChangeListener = Callable[[Change], Awaitable[None]]


class ChangeFeed:
    """Opens the control plane's write transactions and tells listeners what each one changed."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._listeners: list[ChangeListener] = []
        self._pending: ContextVar[list[Change] | None] = ContextVar("pending", default=None)

    def listen(self, listener: ChangeListener) -> None:
        """Call `listener` with every change that commits from now on, in commit order."""
        self._listeners.append(listener)

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A transaction whose `changed` calls are announced once it has committed."""
        pending: list[Change] = []
        token = self._pending.set(pending)
        try:
            async with self.engine.begin() as conn:
                yield conn
        finally:
            self._pending.reset(token)
        for change in dict.fromkeys(pending):
            for listener in self._listeners:
                await listener(change)

    def changed(self, change: Change) -> None:
        """Inside `begin`: this transaction changes `change`'s subject."""
        pending = self._pending.get()
        if pending is None:
            raise RuntimeError("ChangeFeed.changed outside of ChangeFeed.begin")
        pending.append(change)
