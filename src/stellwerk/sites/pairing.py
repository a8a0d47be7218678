"""Pairing from the command line (`stellwerk peers add`), beside a running server or before its
first start: the same record `PUT /v1/peers/{site}` makes, sealed with the same derived key."""

from __future__ import annotations

from urllib.parse import urlsplit

from sqlalchemy.ext.asyncio import AsyncEngine

from stellwerk.capability import Database
from stellwerk.clock import utc_now
from stellwerk.refs import TenantId
from stellwerk.secrets import SecretBox, derive_key
from stellwerk.service import InvalidRequest
from stellwerk.sites.model import MAX_SECRET, MIN_SECRET
from stellwerk.sites.opened import MIGRATIONS, SEALING_PURPOSE
from stellwerk.sites.peers import peer_binding, site_name
from stellwerk.sites.store import SitesStore
from stellwerk.sites.tables import VERSION_TABLE


async def add_peer(
    engine: AsyncEngine,
    master_key: bytes,
    tenant_id: TenantId,
    *,
    local_site: str,
    site: str,
    url: str,
    secret: str,
) -> bool:
    """Pair tenant `tenant_id` with `site`; True when the pairing is new. The URL's address is
    checked by the server's guard on every connection (`--allow-private-targets`)."""
    site = site_name(site)
    if site == local_site:
        raise InvalidRequest(f"{site!r} is this site's own name (--site); a peer is another site")
    url = url.rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(f"{url!r} is not an http(s) URL", field="url")
    if not MIN_SECRET <= len(secret) <= MAX_SECRET:
        raise InvalidRequest(
            f"the secret must be {MIN_SECRET} to {MAX_SECRET} characters", field="secret"
        )
    await Database(engine).migrate(MIGRATIONS, version_table=VERSION_TABLE)
    box = SecretBox(derive_key(master_key, SEALING_PURPOSE))
    sealed = box.encrypt(secret, peer_binding(tenant_id, site))
    return await SitesStore(Database(engine)).put_peer(tenant_id, site, url, sealed, utc_now())
