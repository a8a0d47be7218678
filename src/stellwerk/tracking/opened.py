"""Tracking at work in one process: what `open` builds from the core's context."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

import structlog

from stellwerk.capability import CapabilityContext, Duty, Role
from stellwerk.config import ConfigError
from stellwerk.service import Gate
from stellwerk.tracking import segment_reader
from stellwerk.tracking.collector import Collector
from stellwerk.tracking.enrich import Enricher, GeoDatabase
from stellwerk.tracking.lake_model import lake_installed
from stellwerk.tracking.metrics import TrackingMetrics
from stellwerk.tracking.refine import PSEUDONYM_PURPOSE, Refiner
from stellwerk.tracking.sources import Sources
from stellwerk.tracking.store import SourceStore
from stellwerk.tracking.tables import VERSION_TABLE

if TYPE_CHECKING:
    from stellwerk.tracking.lake_opened import Lake

log = structlog.get_logger("stellwerk.tracking")

NAME: Final = "tracking"
MIGRATIONS: Final = Path(__file__).parent / "migrations"


class TrackingOpened:
    """Sources, the collector, and the request limits the collector's endpoints apply."""

    def __init__(
        self,
        *,
        sources: Sources,
        collector: Collector,
        gate: Gate,
        max_body_bytes: int,
        max_batch: int,
        lake: Lake | None = None,
        geo: GeoDatabase | None = None,
    ) -> None:
        self.sources = sources
        self.collector = collector
        self.gate = gate
        self.max_body_bytes = max_body_bytes
        self.max_batch = max_batch
        self.lake = lake
        self._geo = geo

    def duties(self) -> Mapping[Role, Sequence[Duty]]:
        return self.lake.duties() if self.lake is not None else {}

    async def close(self) -> None:
        if self.lake is not None:
            await self.lake.close()
        if self._geo is not None:
            self._geo.close()


async def open_tracking(context: CapabilityContext) -> TrackingOpened:
    await context.database.migrate(MIGRATIONS, version_table=VERSION_TABLE)
    platform = context.platform
    geo = _geo_database(context.settings.geoip_db)
    refiner = Refiner(Enricher(geo), context.key(PSEUDONYM_PURPOSE))
    sources = Sources(SourceStore(context.database.engine), platform.buses)
    context.facades.offer_directory("Tracking sources", sources)
    if (reason := segment_reader.why_in_python()) is not None:
        log.info("Segment batches are read by the Python reader", reason=reason)
    return TrackingOpened(
        sources=sources,
        collector=Collector(
            platform.ingest, TrackingMetrics(context.metrics), refiner.stored, quick=refiner
        ),
        gate=platform.gate,
        max_body_bytes=context.settings.max_body_bytes,
        max_batch=context.settings.max_batch_events,
        lake=_lake(context),
        geo=geo,
    )


def _geo_database(path: Path | None) -> GeoDatabase | None:
    """The `--geoip-db` file, opened (memory-mapped) once; a missing extra or a file that is
    not a MaxMind DB stops the start, naming the setting."""
    if path is None:
        return None
    try:
        return GeoDatabase(path)
    except ImportError:
        raise ConfigError(
            "geoip_db", "reading a .mmdb file needs the geoip extra: pip install 'stellwerk[geoip]'"
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigError("geoip_db", f"cannot read {path} as a MaxMind DB: {exc}") from None


def _lake(context: CapabilityContext) -> Lake | None:
    """The lake, when DuckDB (the `lake` extra) is installed; else none: `lake` targets are an
    unknown target type and the query answers 503 saying what to install."""
    if not lake_installed():
        log.info("the lake is off: DuckDB is not installed (the lake extra)")
        return None
    from stellwerk.tracking.lake_opened import open_lake

    return open_lake(context)
