"""Prometheus metrics of one Stellwerk process, kept in a registry owned by one app instance.

How it is shaped and why: docs/operations.md ("stellwerk.ops.metrics").
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    Info,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from stellwerk import __version__
from stellwerk.ops.loop_metrics import LoopCounter, LoopGauge, LoopHistogram

__all__ = ["HTTP_DURATION_BUCKETS", "Metrics"]

# Ingest answers in well under a millisecond when the log commit is batched, while admin calls that
# touch PostgreSQL or a slow target can take seconds: the buckets span both ends.
HTTP_DURATION_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class _Registry(CollectorRegistry):
    """A registry that can take back what was registered since a point (`Metrics.attempt`)."""

    def __init__(self) -> None:
        super().__init__(auto_describe=True)
        self.recording: list[Collector] | None = None

    def register(self, collector: Collector) -> None:
        super().register(collector)
        if self.recording is not None:
            self.recording.append(collector)


class Metrics:
    """The metric families of one app instance and the means to render them.

    `registry` is public: other parts register their own families on it (see the module
    docstring). `process=False` leaves out the process, platform and garbage-collector families,
    for embedding where the host process already exports them.
    """

    def __init__(self, *, process: bool = True) -> None:
        self.registry: CollectorRegistry = _Registry()
        # Updated by every request, from the event loop: plain numbers (loop_metrics.py).
        self.http_requests = LoopCounter(
            "stellwerk_http_requests_total",
            "HTTP requests answered, by method, route template and status code.",
            ["method", "route", "status"],
            self.registry,
        )
        self.http_request_duration = LoopHistogram(
            "stellwerk_http_request_duration_seconds",
            "Time from receiving an HTTP request to sending the last byte of its response.",
            ["method", "route"],
            self.registry,
            buckets=HTTP_DURATION_BUCKETS,
        )
        self.http_requests_in_flight = LoopGauge(
            "stellwerk_http_requests_in_flight",
            "HTTP requests received and not yet answered completely.",
            self.registry,
        )
        # The Python version is in python_info already (PlatformCollector).
        self.build_info = Info(
            "stellwerk_build", "Version of the running Stellwerk.", registry=self.registry
        )
        self.build_info.info({"version": __version__})
        if process:
            # process_cpu_seconds_total, process_resident_memory_bytes, open fds, start time
            # (Linux /proc only; elsewhere the collector quietly reports nothing).
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)

    @contextlib.contextmanager
    def attempt(self) -> Iterator[None]:
        """Families registered inside are taken back if it raises: a start that failed halfway
        (a store down, a migration refused) is tried again, and registers them again."""
        registry = self.registry
        assert isinstance(registry, _Registry)
        added: list[Collector] = []
        registry.recording = added
        try:
            yield
        except BaseException:
            for collector in added:
                registry.unregister(collector)
            raise
        finally:
            registry.recording = None

    def watch_volumes(self, volumes: Mapping[str, Path]) -> None:
        """Report the free and total bytes of the file systems holding `volumes` (name: a path
        on it), read at each scrape: a full disk stops ingest, so it must be seen coming."""
        self.registry.register(_VolumeCollector(dict(volumes)))

    def render(
        self, accept_header: str | None = None, names: Collection[str] = ()
    ) -> tuple[bytes, str]:
        """The exposition of every family in the registry (only the samples `names`, when
        given: `/metrics?name[]=...`) and its content type.

        The format follows the scraper's `Accept` header: OpenMetrics when asked for, the classic
        Prometheus text format otherwise.
        """
        encoder, content_type = choose_encoder(accept_header or "")
        registry = self.registry.restricted_registry(names) if names else self.registry
        return encoder(registry), content_type


class _VolumeCollector(Collector):
    def __init__(self, volumes: dict[str, Path]) -> None:
        self._volumes = volumes

    def collect(self) -> Iterator[GaugeMetricFamily]:
        available = GaugeMetricFamily(
            "stellwerk_volume_available_bytes",
            "Bytes free for Stellwerk on the file system of a volume (data, backups).",
            labels=["volume"],
        )
        size = GaugeMetricFamily(
            "stellwerk_volume_size_bytes",
            "Size of the file system of a volume (data, backups).",
            labels=["volume"],
        )
        for name, path in self._volumes.items():
            try:
                usage = shutil.disk_usage(path)
            except OSError:
                continue  # not made yet (a first start), or gone: no sample, not a failed scrape
            available.add_metric([name], usage.free)
            size.add_metric([name], usage.total)
        yield available
        yield size
