"""Sites: a deployment is a site (`--site`); paired with a peer site, it replicates its
tenants' events there so that the peer can take over (docs/global-endpoints.md).

The package reaches the core only through `stellwerk.capability` and the facades of
`stellwerk.service`.
"""

from starlette.routing import WebSocketRoute

from stellwerk.capability import Capability
from stellwerk.sites.edge import build_edge_app
from stellwerk.sites.fast import fast_path
from stellwerk.sites.keycopies import UnopenedKeys, open_texts, seal_texts
from stellwerk.sites.opened import NAME, SitesOpened, open_sites
from stellwerk.sites.pairing import add_peer
from stellwerk.sites.routes import ENDPOINTS
from stellwerk.sites.signing import BadSignature, signed_headers, verify
from stellwerk.sites.stream import ROUTE as STREAM_ROUTE
from stellwerk.sites.stream_intake import peer_stream

CAPABILITY = Capability(
    name=NAME,
    open=open_sites,
    endpoints=ENDPOINTS,
    # The kept peer stream of synchronous replication (signed; no key, like the peer routes).
    routes=[WebSocketRoute(STREAM_ROUTE, peer_stream)],
    fast_path=fast_path,
)

__all__ = [
    "CAPABILITY",
    "BadSignature",
    "SitesOpened",
    "UnopenedKeys",
    "add_peer",
    "build_edge_app",
    "open_texts",
    "seal_texts",
    "signed_headers",
    "verify",
]
