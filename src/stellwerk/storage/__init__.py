"""Storage: the seams' backends arranged by seam, the control plane, and in-process helpers.

`eventlog/`, `queue/`, `archive/` hold each seam's embedded (`sqlite/`) and scale-out
(`jetstream/`) backend; `leases/` and `signals/` the scale-out form of those seams; `sqlite/`
and `jetstream/` the plumbing each technology's backends share; `control/` the control plane.
The seams themselves are in `stellwerk.seams`.
"""

from stellwerk.storage.cache import TtlCache
from stellwerk.storage.watch import LogWatch

__all__ = ["LogWatch", "TtlCache"]
