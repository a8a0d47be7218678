"""The default delivery transport: libcurl's multi interface (pycurl), run on the event loop.

libcurl does the HTTP/1.1 exchange, TLS and the keep-alive pool in C, at well under half of
aiohttp's CPU per request. Host names are resolved through the SSRF guard and handed to libcurl
with `RESOLVE`; every socket it opens is checked once more; no proxies, no cookies, at most
`READ_LIMIT_BYTES` read. What it keeps and what differs: docs/delivery.md, "The HTTP client".
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping, Sequence
from typing import Final

import pycurl
from yarl import URL

from stellwerk.delivery.targets.curl_multi import EventLoopMulti
from stellwerk.delivery.targets.dns import GuardedAddresses
from stellwerk.delivery.targets.responses import READ_LIMIT_BYTES
from stellwerk.delivery.targets.ssrf import (
    ALLOW_HINT,
    AddressPolicy,
    UnsafeAddressError,
    parse_address,
)
from stellwerk.delivery.targets.transport import Answer, TransferError

USER_AGENT: Final = "Stellwerk-Webhooks/1"
KEEPALIVE_SECONDS: Final = 30
# Idle keep-alive connections kept across all hosts; past it the oldest is closed. Connections
# in use have no cap: each target's semaphore bounds its own.
IDLE_CONNECTIONS: Final = 4096
# Easy handles kept for reuse (setting one up again costs more than the request's own work).
SPARE_HANDLES: Final = 256

_HTTP_ONLY: Final = pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS
_SWEEP_AT: Final = 4096


class _CurlAnswer:
    """An answer read from libcurl: the status now, the header block parsed only when asked."""

    __slots__ = ("_fields", "_lines", "body", "status")

    def __init__(self, status: int, body: bytes, lines: list[bytes]) -> None:
        self.status = status
        self.body = body
        self._lines = lines
        self._fields: dict[str, str] | None = None

    def _head(self) -> tuple[str, int]:
        # The last status line: a 100 Continue comes with a header block of its own first.
        start = max(
            (i for i, line in enumerate(self._lines) if line.startswith(b"HTTP/")), default=-1
        )
        return (self._lines[start].decode("latin-1") if start >= 0 else ""), start

    @property
    def reason(self) -> str:
        status_line, _ = self._head()
        parts = status_line.strip().split(" ", 2)
        return parts[2] if len(parts) == 3 else ""

    def header(self, name: str) -> str | None:
        if self._fields is None:
            _, start = self._head()
            fields: dict[str, str] = {}
            for line in self._lines[start + 1 :]:
                field, colon, value = line.decode("latin-1").partition(":")
                if colon:
                    fields.setdefault(field.strip().lower(), value.strip())
            self._fields = fields
        return self._fields.get(name.lower())


class _Handle:
    """One reusable libcurl easy handle and what its callbacks collect for the current request."""

    __slots__ = ("_policy", "body", "curl", "lines", "overflow", "refusal", "size")

    def __init__(self, policy: AddressPolicy, ca_file: str | None, ca_dir: str | None) -> None:
        self._policy = policy
        self.lines: list[bytes] = []
        self.body: list[bytes] = []
        self.size = 0
        self.overflow = False
        self.refusal: str | None = None
        self.curl = curl = pycurl.Curl()
        curl.setopt(pycurl.NOSIGNAL, 1)
        # An empty proxy disables proxies, including those named by http_proxy and friends,
        # which would carry requests past the address checks.
        curl.setopt(pycurl.PROXY, "")
        curl.setopt(pycurl.PROTOCOLS, _HTTP_ONLY)
        curl.setopt(pycurl.REDIR_PROTOCOLS, _HTTP_ONLY)
        curl.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1)
        curl.setopt(pycurl.USERAGENT, USER_AGENT)
        curl.setopt(pycurl.MAXAGE_CONN, KEEPALIVE_SECONDS)
        curl.setopt(pycurl.SSL_VERIFYPEER, 1)
        curl.setopt(pycurl.SSL_VERIFYHOST, 2)
        if ca_file is not None:
            curl.setopt(pycurl.CAINFO, ca_file)
        if ca_dir is not None:
            curl.setopt(pycurl.CAPATH, ca_dir)
        curl.setopt(pycurl.HEADERFUNCTION, self.lines.append)
        curl.setopt(pycurl.WRITEFUNCTION, self._on_body)
        if not policy.allow_private:
            curl.setopt(pycurl.OPENSOCKETFUNCTION, self._open_socket)

    def prepare(
        self,
        url: str,
        headers: list[bytes],
        body: bytes,
        resolved: list[str] | None,
        timeout: float,
    ) -> None:
        self.lines.clear()
        self.body.clear()
        self.size = 0
        self.overflow = False
        self.refusal = None
        curl = self.curl
        curl.setopt(pycurl.URL, url)
        curl.setopt(pycurl.HTTPHEADER, headers)
        curl.setopt(pycurl.POSTFIELDS, body)
        # The whole transfer (connect, TLS, request, answer) within the time the attempt has
        # left: libcurl keeps the time, so an attempt sets no timer of its own.
        curl.setopt(pycurl.TIMEOUT_MS, max(1, int(timeout * 1000)))
        if resolved is not None:
            # libcurl applies a RESOLVE list to the transfer that starts next, then forgets it:
            # set for every request to a named host, it is always the guard's latest answer.
            curl.setopt(pycurl.RESOLVE, resolved)

    def answer(self) -> Answer:
        status: int = self.curl.getinfo(pycurl.RESPONSE_CODE)
        return _CurlAnswer(status, b"".join(self.body), self.lines[:])

    def _on_body(self, chunk: bytes) -> int | None:
        room = READ_LIMIT_BYTES - self.size
        if len(chunk) > room:
            # Returning a short count aborts the transfer: the rest is never read, and the
            # connection, with unread bytes in it, is closed rather than reused.
            self.body.append(chunk[:room])
            self.size = READ_LIMIT_BYTES
            self.overflow = True
            return 0
        self.body.append(chunk)
        self.size += len(chunk)
        return None

    def _open_socket(self, purpose: int, address: pycurl.CurlSockAddr) -> _OpenedSocket | int:
        # Runs inside libcurl: it must not raise (pycurl would only print the error).
        host = address.addr[0] if isinstance(address.addr, tuple) else ""
        parsed = parse_address(host)
        reason = "not an IP address" if parsed is None else self._policy.refusal(parsed)
        if reason is not None:
            self.refusal = f"address {host} is {reason}; {ALLOW_HINT}"
            return pycurl.SOCKET_BAD
        try:
            return _OpenedSocket(socket.socket(address.family, address.socktype, address.protocol))
        except OSError:
            return pycurl.SOCKET_BAD


class _OpenedSocket:
    """A socket handed to libcurl: pycurl duplicates its descriptor, and this closes the
    original as soon as pycurl lets go of it."""

    __slots__ = ("_socket",)

    def __init__(self, sock: socket.socket) -> None:
        self._socket = sock

    def fileno(self) -> int:
        return self._socket.fileno()

    def __del__(self) -> None:
        self._socket.close()


class CurlTransport:
    """POSTs through one libcurl multi handle: its connection pool serves every target."""

    def __init__(
        self,
        policy: AddressPolicy,
        addresses: GuardedAddresses,
        *,
        ca_file: str | None = None,
        ca_dir: str | None = None,
    ) -> None:
        self._policy = policy
        self._addresses = addresses
        self._ca_file = ca_file
        self._ca_dir = ca_dir
        self._multi = EventLoopMulti()
        self._multi.setopt(pycurl.M_MAXCONNECTS, IDLE_CONNECTIONS)
        self._spare: list[_Handle] = []
        self._literal: dict[str, bool] = {}
        self._entries: dict[tuple[str, int], tuple[tuple[str, ...], str]] = {}
        self._last_url: URL | None = None
        self._last_text = ""

    async def post(
        self, url: URL, body: bytes, headers: Mapping[str, str], within: float
    ) -> Answer:
        host = url.raw_host or ""
        resolved: list[str] | None = None
        if not self._is_address(host):
            resolved = [await self._resolve(host, url, within)]
        # UTF-8 as aiohttp sends them (pycurl would refuse a str that is not ASCII).
        lines = [f"{name}: {value}".encode() for name, value in headers.items()]
        joined = b"".join(lines)
        if b"\n" in joined or b"\r" in joined:
            # libcurl sends header lines as given: a line break would add headers of its own.
            raise TransferError("a header value holds a line break", retryable=False)
        lines.append(b"Expect:")  # no 100-continue round trip before the body
        handle = self._spare.pop() if self._spare else self._new_handle()
        try:
            handle.prepare(self._url_text(url), lines, body, resolved, within)
        except (ValueError, TypeError, pycurl.error) as exc:
            # A header libcurl cannot send (a NUL byte, say): no retry will send it either.
            self._release(handle)
            raise TransferError(f"cannot send the request: {exc}", retryable=False) from exc
        try:
            await self._multi.perform(handle.curl)
        except pycurl.error as exc:
            code, message = _error(exc)
            # An answer longer than the limit ends the transfer on purpose: it is an answer.
            if not (code == pycurl.E_WRITE_ERROR and handle.overflow):
                self._release(handle)
                if handle.refusal is not None:
                    raise UnsafeAddressError(handle.refusal) from exc
                raise _failure(url, code, message, within) from exc
        except BaseException:
            # Cancelled (the worker stopping): the multi removed the transfer, which closed its
            # connection mid-request, and the handle is free again.
            self._release(handle)
            raise
        answer = handle.answer()
        self._release(handle)
        return answer

    async def _resolve(self, host: str, url: URL, within: float) -> str:
        """The `RESOLVE` entry of the addresses the guard allows for `host`, looked up (within
        `within` seconds) unless the guard's cache holds them."""
        port = url.port or (443 if url.scheme == "https" else 80)
        addresses = self._addresses.cached(host, port)
        if addresses is None:
            try:
                async with asyncio.timeout(within):
                    addresses = await self._addresses.lookup(host, port)
            except UnsafeAddressError:
                raise
            except TimeoutError as exc:
                raise TransferError(
                    f"timed out resolving {host} after {within:g} s", timed_out=True
                ) from exc
            except OSError as exc:
                raise TransferError(f"cannot resolve {host}: {exc}") from exc
        key = (host, port)
        known = self._entries.get(key)
        if known is not None and known[0] is addresses:
            return known[1]
        if len(self._entries) >= _SWEEP_AT:
            self._entries.clear()
        entry = _resolve_entry(host, port, addresses)
        self._entries[key] = (addresses, entry)
        return entry

    def _url_text(self, url: URL) -> str:
        # A target posts to the same URL object every time: its text is made once.
        if url is self._last_url:
            return self._last_text
        self._last_url, self._last_text = url, str(url)
        return self._last_text

    def _is_address(self, host: str) -> bool:
        # Parsing an address costs more than the rest of a request's Python work: remembered.
        known = self._literal.get(host)
        if known is None:
            if len(self._literal) >= _SWEEP_AT:
                self._literal.clear()
            known = self._literal[host] = parse_address(host) is not None
        return known

    def _new_handle(self) -> _Handle:
        return _Handle(self._policy, self._ca_file, self._ca_dir)

    def _release(self, handle: _Handle) -> None:
        if len(self._spare) < SPARE_HANDLES:
            self._spare.append(handle)
        else:
            handle.curl.close()

    async def close(self) -> None:
        await self._multi.close()
        spare, self._spare = self._spare, []
        for handle in spare:
            handle.curl.close()
        await self._addresses.close()


def _resolve_entry(host: str, port: int, addresses: Sequence[str]) -> str:
    # A `RESOLVE` entry replaces whatever the multi's DNS cache held for host:port, so libcurl
    # connects (with happy eyeballs across the addresses) only where the guard allowed.
    listed = ",".join(f"[{address}]" if ":" in address else address for address in addresses)
    return f"{host}:{port}:{listed}"


def _error(exc: pycurl.error) -> tuple[int, str]:
    if len(exc.args) == 2:
        code, message = exc.args
        return int(code), str(message)
    return -1, str(exc.args[0]) if exc.args else "libcurl error"


def _failure(url: URL, code: int, message: str, timeout: float) -> TransferError:
    # Not E_UNSUPPORTED_PROTOCOL: URLs are http(s) by then, and libcurl also says it of an
    # answer that is not HTTP, which is the receiver's fault and may pass.
    if code == pycurl.E_URL_MALFORMAT:
        return TransferError(f"invalid URL {url}: {message}", retryable=False)
    if code == pycurl.E_COULDNT_CONNECT:
        return TransferError(f"Cannot connect to {url.host}:{url.port}: {message}")
    if code == pycurl.E_OPERATION_TIMEDOUT:
        return TransferError(f"timed out after {timeout:g} s: {message}", timed_out=True)
    return TransferError(f"{message} (libcurl error {code})")
