"""`Signals` between the processes of one data directory: Unix datagrams, no broker.

Each process binds a datagram socket in Linux's abstract namespace (no file, so no limit from
the data directory's path length) and writes a marker file in `<data-dir>/run/signals/` naming
it; a sender sends to every marker but its own. Appends and routings are hints only, as over
NATS: a datagram to a peer that is gone is dropped, and every receiver also polls
(docs/storage.md, "Signals and leases"). A change is answered: each peer sends back `taken` once
it has applied it, and `changed` returns when every live peer has (or after `ack_seconds`), so a
rule saved through one process is in force in the others before the API answers.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import hashlib
import os
import re
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final, Self

import msgspec
import structlog

from stellwerk.refs import BusRef, TenantName
from stellwerk.seams import Change

log = structlog.stdlib.get_logger(__name__)

SIGNALS_DIR: Final = Path("run") / "signals"
# Datagrams stay well below the socket buffer (net.core.wmem_default, usually 208 KiB).
MAX_PAIRS_PER_DATAGRAM: Final = 500
# A `changed` that meets a full receive buffer is tried again this often before it is given up.
CHANGE_SEND_TRIES: Final = 20
CHANGE_RETRY_SECONDS: Final = 0.01
# How long `changed` waits for the peers to have applied a change; a peer slower than this is
# logged and left to catch up.
CHANGE_ACK_SECONDS: Final = 5.0

_APPENDED: Final = b"a"
_ROUTED: Final = b"r"
_CHANGED: Final = b"c"  # + sequence number + sender's name + b"\n" + the change
_TAKEN: Final = b"k"  # + sequence number + the name of the process that applied it
_SEQUENCE: Final = struct.Struct(">Q")
# Processes named so (`role.pid`) have no delivery worker: a `routed` hint is not sent to them.
# In embedded mode that is the gateway, and the hint went to it for every routed round.
_NO_WORKER: Final = ("gateway.",)
# A process's name as it signs its changes (role.pid): also a marker's file name, so nothing
# that could climb out of the marker directory.
_NAME: Final = re.compile(rb"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")

_encode: Final = msgspec.json.Encoder().encode
_decode_pairs: Final = msgspec.json.Decoder(list[tuple[TenantName, str]]).decode
_decode_change: Final = msgspec.json.Decoder(Change).decode


def _ignore(*_args: object) -> None:
    pass


async def _nothing(*_args: object) -> None:
    pass


def signal_address(data_dir: Path, name: str) -> bytes:
    """The abstract socket address of process `name` on the data directory: derived from the
    directory's real path, so two data directories never hear each other."""
    digest = hashlib.sha256(os.fsencode(data_dir.resolve())).hexdigest()[:24]
    return f"\0stellwerk/{digest}/{name}".encode()


def http_address(data_dir: Path, role: str, pid: int) -> str:
    """Where process `pid` of `role` answers HTTP when not on the network (embedded mode's
    pipeline: probes and metrics, for the gateway beside it)."""
    return signal_address(data_dir, f"{role}.{pid}.http").decode()


class UnixSignals:
    """Signals between the processes sharing `data_dir`; `name` tells this one apart (a role and
    the pid by default, so a restarted process never takes its predecessor's address)."""

    def __init__(
        self, data_dir: Path, *, name: str, ack_seconds: float = CHANGE_ACK_SECONDS
    ) -> None:
        self._data_dir = data_dir
        self._ack_seconds = ack_seconds
        self._name = f"{name}.{os.getpid()}"
        self._marker_dir = data_dir / SIGNALS_DIR
        self._marker = self._marker_dir / self._name
        self.address = signal_address(data_dir, self._name)
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._peers: dict[str, bytes] = {}
        self._peers_seen: int | None = None  # the marker directory's mtime_ns when listed
        self._pending: set[tuple[TenantName, str]] = set()
        self._routed = False
        self._flush_scheduled = False
        self._on_appended: Callable[[BusRef], None] = _ignore
        self._on_routed: Callable[[], None] = _ignore
        self._on_changed: Callable[[Change], Awaitable[None]] = _nothing
        self._on_resync: Callable[[], Awaitable[None]] = _nothing
        # Changes are applied one at a time, in the order they came, by one task; each with
        # whom to tell once applied (the sender's name and its sequence number).
        self._changes: collections.deque[tuple[Change, str, bytes]] = collections.deque()
        self._applying: asyncio.Task[None] | None = None
        # Changes sent and not yet answered: (sequence number, peer) -> its answer.
        self._sequence = 0
        self._unanswered: dict[tuple[bytes, str], asyncio.Future[None]] = {}

    async def start(
        self,
        *,
        on_appended: Callable[[BusRef], None],
        on_routed: Callable[[], None],
        on_changed: Callable[[Change], Awaitable[None]],
        on_resync: Callable[[], Awaitable[None]],
    ) -> None:
        self._on_appended = on_appended
        self._on_routed = on_routed
        self._on_changed = on_changed
        self._on_resync = on_resync
        self._loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.setblocking(False)
            sock.bind(self.address)
            # Bound first, then announced: a marker always names an address that was bound.
            self._marker_dir.mkdir(parents=True, exist_ok=True)
            self._marker.write_bytes(self.address)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._loop.add_reader(sock.fileno(), self._readable)

    async def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self._marker.unlink()
        if self._loop is not None:
            self._loop.remove_reader(sock.fileno())
        sock.close()
        if self._applying is not None:
            self._applying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._applying

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- sending -------------------------------------------------------------------------------

    def appended(self, bus: BusRef) -> None:
        self._pending.add((bus.tenant, bus.bus))  # as they go on the wire
        self._schedule_flush()

    def routed(self) -> None:
        self._routed = True
        self._schedule_flush()

    async def changed(self, change: Change) -> None:
        """Send `change` to every peer and wait until each has applied it."""
        self._sequence += 1
        sequence = _SEQUENCE.pack(self._sequence)
        datagram = b"".join((_CHANGED, sequence, self._name.encode(), b"\n", _encode(change)))
        loop = asyncio.get_running_loop()
        answers: dict[str, asyncio.Future[None]] = {}
        try:
            for name, address in list(self._current_peers().items()):
                answer = self._unanswered[(sequence, name)] = loop.create_future()
                for _ in range(CHANGE_SEND_TRIES):
                    sent = self._send(name, address, datagram)
                    if sent is not False:
                        break
                    await asyncio.sleep(CHANGE_RETRY_SECONDS)  # its buffer is full: let it read
                else:
                    log.warning("change not signalled: the process does not read", peer=name)
                    sent = None
                if sent:
                    answers[name] = answer
            if answers:
                _done, late = await asyncio.wait(answers.values(), timeout=self._ack_seconds)
                if late:
                    log.warning(
                        "change not yet taken in by every process",
                        kind=change.kind,
                        peers=sorted(n for n, a in answers.items() if a in late),
                        seconds=self._ack_seconds,
                    )
        finally:
            for key in [k for k in self._unanswered if k[0] == sequence]:
                del self._unanswered[key]

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled and self._sock is not None:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._send_pending)

    def _send_pending(self) -> None:
        self._flush_scheduled = False
        pairs, self._pending = sorted(self._pending), set()
        routed, self._routed = self._routed, False
        appends = [
            _APPENDED + _encode(pairs[i : i + MAX_PAIRS_PER_DATAGRAM])
            for i in range(0, len(pairs), MAX_PAIRS_PER_DATAGRAM)
        ]
        for name, address in list(self._current_peers().items()):
            datagrams = appends
            if routed and not name.startswith(_NO_WORKER):
                datagrams = [*appends, _ROUTED]
            for datagram in datagrams:
                # A full buffer: the peer is busy reading what it was told; its poll finds
                # whatever this hint would have said.
                if not self._send(name, address, datagram):
                    break

    def _send(self, name: str, address: bytes, datagram: bytes) -> bool | None:
        """True: sent; False: the peer's buffer is full; None: the peer is gone."""
        sock = self._sock
        if sock is None:
            return None
        try:
            sock.sendto(datagram, address)
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
                log.debug("signal not sent", peer=name, error=repr(exc))
                return None
            # Nobody bound there any more: the process ended without removing its marker.
            self._peers.pop(name, None)
            with contextlib.suppress(OSError):
                (self._marker_dir / name).unlink()
            return None
        return True

    def _current_peers(self) -> dict[str, bytes]:
        """The other processes' addresses, listed again only when the marker directory changed."""
        try:
            seen = self._marker_dir.stat().st_mtime_ns
        except OSError:
            return {}
        if seen != self._peers_seen:
            peers: dict[str, bytes] = {}
            with contextlib.suppress(OSError):
                for marker in self._marker_dir.iterdir():
                    if marker.name == self._name:
                        continue
                    with contextlib.suppress(OSError):
                        address = marker.read_bytes()
                        if address.startswith(b"\0"):
                            peers[marker.name] = address
            self._peers, self._peers_seen = peers, seen
        return self._peers

    # -- receiving -----------------------------------------------------------------------------

    def _readable(self) -> None:
        sock = self._sock
        while sock is not None:
            try:
                datagram = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("reading signals failed", error=repr(exc))
                return
            self._heard(datagram)

    def _heard(self, datagram: bytes) -> None:
        kind, body = datagram[:1], datagram[1:]
        try:
            if kind == _APPENDED:
                for tenant, bus in _decode_pairs(body):
                    self._on_appended(BusRef(tenant, bus))
            elif kind == _ROUTED:
                self._on_routed()
            elif kind == _CHANGED:
                sequence = body[: _SEQUENCE.size]
                sender, _, change = body[_SEQUENCE.size :].partition(b"\n")
                if len(sequence) != _SEQUENCE.size or not _NAME.fullmatch(sender):
                    raise msgspec.DecodeError("no sequence number or sender")
                self._apply(_decode_change(change), sender.decode(), sequence)
            elif kind == _TAKEN:
                sequence, peer = body[: _SEQUENCE.size], body[_SEQUENCE.size :]
                answer = self._unanswered.get((sequence, peer.decode(errors="replace")))
                if answer is not None and not answer.done():
                    answer.set_result(None)
            else:
                log.warning("ignored a signal of unknown kind", kind=repr(kind))
        except (msgspec.DecodeError, UnicodeDecodeError):
            log.warning("ignored a malformed signal", kind=repr(kind))

    def _apply(self, change: Change, sender: str, sequence: bytes) -> None:
        self._changes.append((change, sender, sequence))
        if self._applying is None or self._applying.done():
            self._applying = asyncio.create_task(self._apply_changes(), name="signals-changed")

    async def _apply_changes(self) -> None:
        while self._changes:
            change, sender, sequence = self._changes.popleft()
            try:
                await self._on_changed(change)
            except Exception:
                log.exception("applying a change failed; resyncing", kind=change.kind)
                try:
                    await self._on_resync()
                except Exception:
                    log.exception("resyncing failed")
            # Taken in (or given up on after a resync): the sender may answer its caller.
            address = signal_address(self._data_dir, sender)
            self._send(sender, address, _TAKEN + sequence + self._name.encode())
