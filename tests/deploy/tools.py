"""The command-line tools that check deploy/ without a container engine or a cluster.

`kubectl` (its built-in kustomize), `docker-compose` (Debian's, which checks a compose file
without a Docker engine) and `promtool` (from Debian's prometheus package; `.ci/run` unpacks
it into `.ci/tools/`). A test that needs one skips with the reason when it is missing, except
under CI=true, where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Final

import pytest

ROOT: Final = Path(__file__).resolve().parents[2]
DEPLOY: Final = ROOT / "deploy"
# Where .ci/run unpacks tools that Debian ships only inside a package with a daemon.
CI_TOOLS: Final = ROOT / ".ci" / "tools"
IN_CI: Final = os.environ.get("CI") == "true"


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(CI_TOOLS))
    if found:
        return found
    problem = f"{name} is not installed (.ci/run installs it; see docs/deploy.md)"
    if IN_CI:
        pytest.fail(f"{problem} (CI=true: it is required)")
    pytest.skip(problem)


def run(
    *command: str, env: dict[str, str] | None = None, unset: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in unset}
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
        env={**environment, **(env or {})},
    )
