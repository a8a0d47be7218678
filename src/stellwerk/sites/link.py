"""Signed requests to a tenant's peer site: one place that finds the peer, signs and sends.

POSTs (replicated events, synchronous replication's on the ingest path) go through the
deliveries' transport (libcurl), the other requests through the aiohttp session."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Final

import aiohttp

from stellwerk.auth import Principal
from stellwerk.capability import NoAnswer, Outgoing
from stellwerk.sites.peers import Peers
from stellwerk.sites.signing import signed_headers

DEFAULT_TIMEOUT_SECONDS: Final = 10.0


class PeerLink:
    def __init__(self, peers: Peers, outgoing: Outgoing) -> None:
        self._peers = peers
        self._outgoing = outgoing

    @property
    def local_site(self) -> str:
        return self._peers.local_site

    async def send(
        self,
        principal: Principal,
        site: str,
        method: str,
        path: str,
        body: bytes = b"",
        *,
        within: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> str | None:
        """Send a signed request to the tenant's peer `site`: None when it answered 2xx, else
        what went wrong (no such peer, an error answer, no answer `within` seconds)."""
        record = await self._peers.record(principal, site)
        if record is None:
            return f"tenant {principal.tenant!r} has no peer {site!r}"
        headers = signed_headers(
            self._peers.secret(principal, record),
            site=self._peers.local_site,
            tenant=principal.tenant,
            timestamp=int(time.time()),
            method=method,
            path=path,
            body=body,
        )
        headers["content-type"] = "application/json"
        try:
            if method == "POST":  # events, synchronous replication's among them: the hot path
                status, answer = await self._outgoing.post(record.url + path, body, headers, within)
                if 200 <= status < 300:
                    return None
                return f"HTTP {status}: {answer[:300].decode(errors='replace')}"
            async with self._outgoing.session().request(
                method,
                record.url + path,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=within),
            ) as response:
                # Read to the end even when unused: aiohttp closes a connection whose answer
                # was left unread, and each peer request then paid a new TCP connection.
                text = await response.text()
                if 200 <= response.status < 300:
                    return None
                return f"HTTP {response.status}: {text[:300]}"
        except NoAnswer as exc:
            return str(exc)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    async def probe(self, principal: Principal, site: str, within: float) -> str | None:
        """Whether the peer `site` answers its readiness probe within `within` seconds: None
        when it does, else why not."""
        record = await self._peers.record(principal, site)
        if record is None:
            return f"tenant {principal.tenant!r} has no peer {site!r}"
        try:
            async with self._outgoing.session().get(
                record.url + "/readyz", timeout=aiohttp.ClientTimeout(total=within)
            ) as answer:
                await answer.read()  # so the connection is kept (see `send`)
                if answer.status == 200:
                    return None
                return f"readyz answered HTTP {answer.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    async def metrics(
        self, principal: Principal, site: str, within: float, names: Sequence[str] = ()
    ) -> str | None:
        """The peer `site`'s `/metrics` text (only the samples `names`, when given and the peer
        can: an older one answers all of them), or None when it gives none within `within`."""
        record = await self._peers.record(principal, site)
        if record is None:
            return None
        try:
            async with self._outgoing.session().get(
                record.url + "/metrics",
                params=[("name[]", name) for name in names],
                timeout=aiohttp.ClientTimeout(total=within),
            ) as answer:
                return await answer.text() if answer.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, OSError):
            return None
