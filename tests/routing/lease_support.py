"""Helpers for the lease tests: a holder that dies."""

from __future__ import annotations

import asyncio

from stellwerk.storage.leases import JetStreamLeases


async def crash(leases: JetStreamLeases) -> None:
    """Die without releasing anything: the keeper stops, the connection drops. The leases it
    holds still answer `holds` until their time runs out, as a stalled process's would."""
    keeper, leases._keeper = leases._keeper, None
    assert keeper is not None
    keeper.cancel()
    await asyncio.wait([keeper])
    conn, leases._conn = leases._conn, None
    assert conn is not None
    await conn.close()
