"""A libcurl multi handle driven by the asyncio event loop: no thread, no polling.

libcurl's sockets go into one epoll set of ours, and the loop watches that set's descriptor
with `add_reader`; when it is readable, the ready sockets go back to libcurl with
`socket_action`. libcurl's timer callback becomes one loop timer. One epoll set rather than an
`add_reader` per socket because libcurl re-registers a kept connection's socket on every
request, and the loop's own registration costs far more than a call on the set (docs/delivery.md).
Linux only (`SUPPORTED`); elsewhere deliveries use the aiohttp transport.
"""

from __future__ import annotations

import asyncio
import select
from typing import Any, Final

import pycurl

SUPPORTED: Final = hasattr(select, "epoll")

_Result = tuple[int, str]  # libcurl's error code (0: done) and message


class EventLoopMulti:
    """Runs `pycurl.Curl` transfers on the running event loop (bound to the first one used)."""

    def __init__(self) -> None:
        self._multi = pycurl.CurlMulti()
        self._multi.setopt(pycurl.M_SOCKETFUNCTION, self._on_socket)
        self._multi.setopt(pycurl.M_TIMERFUNCTION, self._on_timer)
        self._epoll = select.epoll()
        self._watched: dict[int, int] = {}  # fd -> the epoll events it is registered for
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.Handle | None = None
        self._timer_at = 0.0  # when `_timer` fires (loop time)
        self._due: float | None = None  # when libcurl wants `SOCKET_TIMEOUT` (loop time)
        self._running: dict[pycurl.Curl, asyncio.Future[_Result]] = {}
        self._closed = False

    def setopt(self, option: int, value: Any) -> None:
        self._multi.setopt(option, value)

    async def perform(self, curl: pycurl.Curl) -> None:
        """Run one transfer to its end; `pycurl.error(code, message)` when it fails.

        Cancelling removes the transfer from the multi handle at once (libcurl closes its
        connection if a request was under way), and `curl` may be used again.
        """
        if self._closed:
            raise RuntimeError("the multi handle is closed")
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
            loop.add_reader(self._epoll.fileno(), self._ready)
        future: asyncio.Future[_Result] = loop.create_future()
        self._running[curl] = future
        self._multi.add_handle(curl)
        try:
            code, message = await future
        except asyncio.CancelledError:
            if self._running.pop(curl, None) is not None:
                self._multi.remove_handle(curl)
            raise
        if code:
            raise pycurl.error(code, message)

    def _on_socket(self, what: int, fd: int, multi: pycurl.CurlMulti, data: Any) -> None:
        # Called inside libcurl's own calls (which close a socket only after its POLL_REMOVE):
        # it must not raise and must not call back into libcurl.
        if what == pycurl.POLL_REMOVE:
            if self._watched.pop(fd, None) is not None:
                try:  # noqa: SIM105 (once a request: suppress() costs more than the call)
                    self._epoll.unregister(fd)
                except OSError:
                    pass  # already closed: the kernel dropped it from the set
            return
        events = (select.EPOLLIN if what & pycurl.POLL_IN else 0) | (
            select.EPOLLOUT if what & pycurl.POLL_OUT else 0
        )
        had = self._watched.get(fd)
        if had == events:
            return
        self._watched[fd] = events
        if had is not None:
            try:
                self._epoll.modify(fd, events)
                return
            except FileNotFoundError:
                pass  # a new socket with the number of one closed unseen: register it afresh
        self._epoll.register(fd, events)

    def _on_timer(self, timeout_ms: int) -> None:
        # libcurl moves its next timeout about twice a request (each transfer has a deadline):
        # a timer that fires no later than asked is kept and, if it comes early, set again for
        # `_due` then, instead of being cancelled and made anew every time.
        loop = self._loop
        if timeout_ms < 0 or loop is None or self._closed:
            self._due = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        due = self._due = loop.time() + timeout_ms / 1000
        timer = self._timer
        if timer is not None:
            if self._timer_at <= due:
                return
            timer.cancel()
        # (uvloop answers a time already past with a plain Handle, which has no `when()`.)
        self._timer, self._timer_at = loop.call_at(due, self._on_timeout), due

    def _on_timeout(self) -> None:
        self._timer = None
        due, loop = self._due, self._loop
        if due is None or loop is None:
            return
        if loop.time() < due:  # kept from before libcurl moved its timeout later
            self._timer, self._timer_at = loop.call_at(due, self._on_timeout), due
            return
        self._due = None
        self._act(pycurl.SOCKET_TIMEOUT, 0)

    def _ready(self) -> None:
        for fd, events in self._epoll.poll(0):
            mask = 0
            if events & (select.EPOLLIN | select.EPOLLHUP):
                mask |= pycurl.CSELECT_IN
            if events & select.EPOLLOUT:
                mask |= pycurl.CSELECT_OUT
            if events & select.EPOLLERR:
                mask |= pycurl.CSELECT_ERR
            if not self._act(fd, mask):
                return

    def _act(self, fd: int, mask: int) -> bool:
        """Let libcurl act on `fd` (or its timers), then settle what finished; False if the
        multi handle itself failed."""
        try:
            self._multi.socket_action(fd, mask)
        except pycurl.error as exc:
            # The multi handle itself failed (out of memory, say): no transfer will finish.
            for curl in list(self._running):
                self._finish(curl, -1, f"libcurl multi handle: {exc}")
            return False
        while True:
            queued, done, failed = self._multi.info_read()
            for curl in done:
                self._finish(curl, 0, "")
            for curl, code, message in failed:
                self._finish(curl, code, message)
            if not queued:
                return True

    def _finish(self, curl: pycurl.Curl, code: int, message: str) -> None:
        future = self._running.pop(curl, None)
        if future is None:
            return
        self._multi.remove_handle(curl)
        if not future.done():
            future.set_result((code, message))

    async def close(self) -> None:
        """End what runs (each fails: closed), close every connection; no use after this."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for curl in list(self._running):
            self._finish(curl, -1, "the delivery transport was closed")
        self._multi.close()  # closes the kept connections, each after its POLL_REMOVE
        if self._loop is not None:
            self._loop.remove_reader(self._epoll.fileno())
        self._epoll.close()
        self._watched.clear()
