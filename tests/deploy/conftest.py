"""Fixtures of the deploy/ tests: rendered overlays, and the metrics a real process exports."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from tests.deploy.tools import DEPLOY, run, tool

from stellwerk.app import build_app
from stellwerk.config import load_settings

OVERLAYS = ("embedded", "scale-out", "tenant-example")


def render(overlay: str) -> list[dict[str, Any]]:
    result = run(tool("kubectl"), "kustomize", str(DEPLOY / "k8s" / "overlays" / overlay))
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Each overlay as `kubectl kustomize` renders it."""
    return {overlay: render(overlay) for overlay in OVERLAYS}


@pytest.fixture(scope="session")
def exported_metrics(tmp_path_factory: pytest.TempPathFactory) -> frozenset[str]:
    """The metric families an embedded process's /metrics declares (# TYPE lines), with every
    optional part on (scheduled backups)."""
    folder = tmp_path_factory.mktemp("metrics")
    settings = {"data_dir": str(folder / "data"), "backup_dir": str(folder / "backups")}

    async def scrape() -> str:
        app = build_app(load_settings(settings))
        async with app.router.lifespan_context(app):
            await asyncio.wait_for(app.state.lifecycle.wait_started(), 30)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://s") as client:
                return (await client.get("/metrics")).text

    text = asyncio.run(scrape())
    return frozenset(re.findall(r"^# TYPE (\S+) ", text, re.MULTILINE))


_SUFFIXES = ("_bucket", "_sum", "_count", "_created", "_total")


def metric_names(promql: str) -> set[str]:
    """The metric names a PromQL expression reads (ours and the process collector's)."""
    return set(re.findall(r"\b((?:stellwerk|process|python)_[a-z0-9_]+)\b", promql))


def is_exported(name: str, exported: frozenset[str]) -> bool:
    if name in exported:
        return True
    return any(name.endswith(s) and name.removesuffix(s) in exported for s in _SUFFIXES) or any(
        name.endswith(s) and name.removesuffix(s) + "_total" in exported for s in _SUFFIXES
    )


def files(folder: Path, pattern: str) -> list[Path]:
    return sorted(folder.glob(pattern))
