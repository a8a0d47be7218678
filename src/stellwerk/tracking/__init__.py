"""Server-side tracking: sources with write keys, and the collector that takes the Segment
protocol (and, later, Snowplow's and a first-party browser tracker's) onto a bus as
CloudEvents.

docs/tracking.md describes it for users. The package reaches the core only through
`stellwerk.capability` and the facades of `stellwerk.service`.
"""

from stellwerk.capability import Capability
from stellwerk.tracking.collector import Arrival, Collector, Refine
from stellwerk.tracking.lake_backup import LAKE_BACKUP
from stellwerk.tracking.model import Binding, Source, SourceInput
from stellwerk.tracking.opened import NAME, TrackingOpened, open_tracking
from stellwerk.tracking.routes_browser import ROUTES as BROWSER_ROUTES
from stellwerk.tracking.routes_browser import fast_path
from stellwerk.tracking.routes_destinations import ENDPOINTS as DESTINATION_ENDPOINTS
from stellwerk.tracking.routes_lake import ENDPOINTS as LAKE_ENDPOINTS
from stellwerk.tracking.routes_segment import ROUTES as SEGMENT_ROUTES
from stellwerk.tracking.routes_snowplow import ROUTES as SNOWPLOW_ROUTES
from stellwerk.tracking.routes_sources import ENDPOINTS as SOURCE_ENDPOINTS
from stellwerk.tracking.sources import Sources

CAPABILITY = Capability(
    name=NAME,
    open=open_tracking,
    endpoints=[*SOURCE_ENDPOINTS, *LAKE_ENDPOINTS, *DESTINATION_ENDPOINTS],
    routes=[*SEGMENT_ROUTES, *SNOWPLOW_ROUTES, *BROWSER_ROUTES],
    fast_path=fast_path,  # /t.js and the Segment API's POSTs, ahead of the app's stack
    backup_parts=[LAKE_BACKUP],  # the lake's spool, and its files in the data directory
)

__all__ = [
    "CAPABILITY",
    "Arrival",
    "Binding",
    "Collector",
    "Refine",
    "Source",
    "SourceInput",
    "Sources",
    "TrackingOpened",
]
