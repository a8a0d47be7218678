"""The lake at work in one process: the `lake` target type, and where a delivering process
keeps its spool and runs the writer that rolls files."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import duckdb
import structlog

from stellwerk.capability import CapabilityContext, Duty, Role
from stellwerk.tracking.lake import TYPE, LakeTargetKind, LakeWriter, configure_s3, is_remote
from stellwerk.tracking.lake_backup import LAKE_DIR, SPOOL_DIR, SPOOL_FILE
from stellwerk.tracking.lake_metrics import LakeMetrics
from stellwerk.tracking.lake_query import LakeQuery
from stellwerk.tracking.lake_spool import Spool

log = structlog.get_logger("stellwerk.tracking.lake")


def lake_root(data_dir: Path, lake_url: str | None) -> str:
    """Where the lake is: `--lake-url`, else `<data-dir>/lake`."""
    return lake_url or str((data_dir / LAKE_DIR).resolve())


class Lake:
    """The lake target kind, the query over the lake, and (delivering) the spool and writer."""

    def __init__(self, root: str, kind: LakeTargetKind, writer: LakeWriter | None) -> None:
        self.root = root
        self.kind = kind
        self.writer = writer
        self.query = LakeQuery(root)

    def duties(self) -> Mapping[Role, Sequence[Duty]]:
        if self.writer is None:
            return {}
        writer = self.writer
        return {Role.DELIVERY: [Duty("lake-writer", writer.run, writer.stop, ends=True)]}

    async def close(self) -> None:
        if self.writer is not None:
            await self.writer.spool.close()


def open_lake(context: CapabilityContext) -> Lake:
    settings = context.settings
    root = lake_root(settings.data_dir, settings.lake_url)
    if is_remote(root):
        try:
            with duckdb.connect() as db:
                configure_s3(db)
        except duckdb.Error as exc:
            # Said once at the start: otherwise only each failed roll and query would say it.
            log.error("lake_s3_unusable", lake=root, error=str(exc).splitlines()[0])
    writer = None
    metrics = LakeMetrics(context.metrics)
    if Role.DELIVERY in context.roles:
        spooled = settings.data_dir / SPOOL_DIR
        spool = Spool(spooled / SPOOL_FILE)
        writer = LakeWriter(spool, root, spooled / "scratch", metrics=metrics)
    kind = LakeTargetKind(writer.spool if writer is not None else None, metrics)
    context.target_kinds.register(TYPE, kind)
    return Lake(root, kind, writer)
