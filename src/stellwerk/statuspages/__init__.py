"""Status pages driven by events: components, incidents and maintenance, served as pages and
as Statuspage's v2 JSON, kept fresh by the invalidation events every change publishes.

docs/status-pages.md describes them for users. The package reaches the core only through
`stellwerk.capability` and the facades of `stellwerk.service`.
"""

from stellwerk.capability import Capability
from stellwerk.statuspages import public, routes_access, routes_subscribers
from stellwerk.statuspages.domains import DomainRoute
from stellwerk.statuspages.fast import fast_path
from stellwerk.statuspages.feeds import ROUTES as FEED_ROUTES
from stellwerk.statuspages.opened import NAME, StatusPagesOpened, open_status_pages
from stellwerk.statuspages.routes import ENDPOINTS as PAGE_ENDPOINTS
from stellwerk.statuspages.routes_checks import ENDPOINTS as CHECK_ENDPOINTS
from stellwerk.statuspages.routes_incidents import INCIDENT_ENDPOINTS
from stellwerk.statuspages.service import StatusPages
from stellwerk.statuspages.statusapi import ROUTES as STATUS_API_ROUTES

# Everything under /status/{page} (matched ahead of the API); on a page's custom domain the same
# at its root (last, so that no other route pays for the Host lookup).
PUBLIC_ROUTES = [
    *public.ROUTES,
    *STATUS_API_ROUTES,
    *FEED_ROUTES,
    *routes_access.ROUTES,
    *routes_subscribers.ROUTES,
]
CAPABILITY = Capability(
    name=NAME,
    open=open_status_pages,
    endpoints=[
        *PAGE_ENDPOINTS,
        *INCIDENT_ENDPOINTS,
        *CHECK_ENDPOINTS,
        *routes_access.ENDPOINTS,
        *routes_subscribers.ENDPOINTS,
    ],
    routes=PUBLIC_ROUTES,
    last_routes=[DomainRoute(public.domain_pages, PUBLIC_ROUTES, default=public.not_found_app)],
    fast_path=fast_path,  # fresh public pages from L1, ahead of the app's stack
)

__all__ = ["CAPABILITY", "StatusPages", "StatusPagesOpened"]
