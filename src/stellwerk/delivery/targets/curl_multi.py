"""A libcurl multi handle driven by the asyncio event loop: no thread, no polling.

libcurl's socket callback becomes `add_reader`/`add_writer`, its timer callback `call_later`,
and each event goes back with `socket_action`, after which finished transfers settle their
futures. Leaner per transfer than pycurl's own `AsyncCurlMulti`, and a cancelled transfer is
removed at once, so its handle can be reused.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pycurl

_Result = tuple[int, str]  # libcurl's error code (0: done) and message


class EventLoopMulti:
    """Runs `pycurl.Curl` transfers on the running event loop (bound to the first one used)."""

    def __init__(self) -> None:
        self._multi = pycurl.CurlMulti()
        self._multi.setopt(pycurl.M_SOCKETFUNCTION, self._on_socket)
        self._multi.setopt(pycurl.M_TIMERFUNCTION, self._on_timer)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._watched: dict[int, int] = {}  # fd -> the POLL_IN/POLL_OUT bits registered
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
        # Called by libcurl inside its own calls: register, never call back into libcurl here.
        loop = self._loop
        if loop is None:
            return
        wanted = 0 if what == pycurl.POLL_REMOVE else what & (pycurl.POLL_IN | pycurl.POLL_OUT)
        had = self._watched.get(fd, 0)
        if had & pycurl.POLL_IN and not wanted & pycurl.POLL_IN:
            loop.remove_reader(fd)
        if had & pycurl.POLL_OUT and not wanted & pycurl.POLL_OUT:
            loop.remove_writer(fd)
        if wanted & pycurl.POLL_IN and not had & pycurl.POLL_IN:
            loop.add_reader(fd, self._act, fd, pycurl.CSELECT_IN)
        if wanted & pycurl.POLL_OUT and not had & pycurl.POLL_OUT:
            loop.add_writer(fd, self._act, fd, pycurl.CSELECT_OUT)
        if wanted:
            self._watched[fd] = wanted
        else:
            self._watched.pop(fd, None)

    def _on_timer(self, timeout_ms: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if timeout_ms >= 0 and self._loop is not None and not self._closed:
            self._timer = self._loop.call_later(
                timeout_ms / 1000, self._act, pycurl.SOCKET_TIMEOUT, 0
            )

    def _act(self, fd: int, events: int) -> None:
        if fd == pycurl.SOCKET_TIMEOUT:
            self._timer = None
        try:
            self._multi.socket_action(fd, events)
        except pycurl.error as exc:
            # The multi handle itself failed (out of memory, say): no transfer will finish.
            for curl in list(self._running):
                self._finish(curl, -1, f"libcurl multi handle: {exc}")
            return
        while True:
            queued, done, failed = self._multi.info_read()
            for curl in done:
                self._finish(curl, 0, "")
            for curl, code, message in failed:
                self._finish(curl, code, message)
            if not queued:
                return

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
        if self._loop is not None:
            for fd in self._watched:
                self._loop.remove_reader(fd)
                self._loop.remove_writer(fd)
        self._watched.clear()
        self._loop = None  # closing the pooled connections calls back: nothing to register
        self._multi.close()
