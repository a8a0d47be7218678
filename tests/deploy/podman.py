"""A real container engine for the deploy/ tests: podman, daemonless, from Debian's packages,
and podman-compose (PyPI) for the compose files.

Tests that build or run the image skip with the reason when podman is missing or no base image
can be had (the registry is out of reach and no stand-in was made). Under CI=true they run only
when STELLWERK_TEST_IMAGES=1 asks for them: .ci/run installs no engine, because building the
image costs minutes of the suite's 15 (docs/deploy.md, "The image, built and run"), and a CI
machine that happens to have podman from an earlier session must not spend them unasked.

The settings that make the engine work in a VM with cgroups in hybrid mode and no right to raise
resource limits are in one containers.conf, which every command here gets.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Final

import httpx
import pytest
from tests.deploy.tools import ROOT

OFFICIAL_BASE: Final = "docker.io/library/python:3.11-slim-bookworm"
# What deploy/image/python-base-from-debian.sh makes when no registry is reachable.
STAND_IN_BASE: Final = "localhost/stellwerk-python:3.11-bookworm"


@functools.cache
def environment() -> dict[str, str]:
    """The environment of every podman command: a containers.conf with limits a root without
    CAP_SYS_RESOURCE may grant (the engine's default, a million open files, it may not), runc
    where it is installed (crun refuses cgroups in hybrid mode), and builds in Docker's image
    format (OCI's has no HEALTHCHECK)."""
    lines = ["[containers]", 'default_ulimits = ["nofile=16384:16384", "nproc=4096:4096"]']
    if shutil.which("runc"):
        lines += ["[engine]", 'runtime = "runc"']
    conf = Path(tempfile.gettempdir()) / "stellwerk-tests-containers.conf"
    conf.write_text("\n".join(lines) + "\n")
    return {**os.environ, "CONTAINERS_CONF": str(conf), "BUILDAH_FORMAT": "docker"}


def command(name: str) -> str:
    if os.environ.get("CI") == "true" and os.environ.get("STELLWERK_TEST_IMAGES") != "1":
        pytest.skip("CI runs the image and compose tests only with STELLWERK_TEST_IMAGES=1")
    found = shutil.which(name)
    if not found:
        pytest.skip(
            f"{name} is not installed (apt-get install podman runc; pip install podman-compose; "
            "docs/deploy.md)"
        )
    return found


def run(
    *args: str,
    timeout: float = 120,
    check: bool = True,
    tool: str = "podman",
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`tool` (podman or podman-compose) with `args`, from the repository's root, with `env`
    added to its environment."""
    result = subprocess.run(
        [command(tool), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
        env={**environment(), **(env or {})},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{tool} {' '.join(args)}: {result.stderr.strip()[-2000:]}")
    return result


def base_image() -> str:
    """The image to build on: the official one if it is here or can be pulled, else the stand-in.
    Without either, a skip that quotes the registry's error."""
    for image in (OFFICIAL_BASE, STAND_IN_BASE):
        if run("image", "exists", image, check=False).returncode == 0:
            return image
    pulled = run("pull", "--quiet", OFFICIAL_BASE, check=False, timeout=300)
    if pulled.returncode == 0:
        return OFFICIAL_BASE
    pytest.skip(
        f"no base image: {pulled.stderr.strip()}; make a stand-in from Debian's packages with "
        "deploy/image/python-base-from-debian.sh"
    )


def ready(url: str) -> bool:
    """Whether the Stellwerk at `url` (a published port) answers /readyz with 200."""
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
