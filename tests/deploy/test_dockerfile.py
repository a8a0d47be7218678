"""deploy/Dockerfile, checked without an engine: checkov's Dockerfile policies, and what the
image promises (multi-stage, a numeric non-root user, a health check that works)."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import pytest
from tests.cli.server import running_server
from tests.deploy.tools import DEPLOY, ROOT, run
from tests.nats_support import free_port

from stellwerk.ops.probe import main as probe

DOCKERFILE = DEPLOY / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments left out."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def test_checkov_finds_nothing_in_the_dockerfile() -> None:
    result = run(
        str(Path(sys.executable).with_name("checkov")),
        "--config-file",
        str(DEPLOY / "checkov.yaml"),
        "--framework",
        "dockerfile",
        "-f",
        str(DOCKERFILE),
        "--output",
        "json",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"failed": 0' in result.stdout, result.stdout


def test_the_image_is_built_in_one_stage_and_runs_unprivileged_in_another() -> None:
    steps = instructions()
    stages = [args for word, args in steps if word == "FROM"]
    assert len(stages) == 2, stages
    assert stages[0].endswith("AS build"), stages
    # Both stages stand on one base, a build argument whose default is pinned to a version.
    assert {s.split()[0] for s in stages} == {"${PYTHON_IMAGE}"}, stages
    assert ("ARG", "PYTHON_IMAGE=python:3.11-slim-bookworm") in steps
    user = [args for word, args in steps if word == "USER"]
    assert user
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user[-1]), user
    # The venv comes from the build stage; nothing in the last stage installs anything.
    last = steps[len(steps) - 1 - [w for w, _ in reversed(steps)].index("FROM") :]
    assert any(w == "COPY" and a.startswith("--from=build") for w, a in last)
    assert not any(w == "RUN" and "pip install" in a for w, a in last)
    assert ("ENTRYPOINT", '["stellwerk"]') in steps


def test_what_the_image_copies_and_installs_exists() -> None:
    copied = [args.split()[0] for word, args in instructions() if word == "COPY"]
    for source in copied:
        if not source.startswith("--"):
            assert (ROOT / source).exists(), source
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    for source in copied:
        if not source.startswith("--"):
            assert f"!{source.rstrip('/')}/" in ignore or f"!{source}" in ignore, source
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    installed = re.search(r'pip install --no-compile "\.\[([a-z,]+)\]"', DOCKERFILE.read_text())
    assert installed is not None
    # Every extra but the developers': an image without one refuses what its flag promises.
    assert set(installed.group(1).split(",")) == set(extras) - {"dev"}


def test_the_data_directory_is_a_volume_the_user_owns() -> None:
    text = DOCKERFILE.read_text()
    assert 'VOLUME ["/var/lib/stellwerk"]' in text
    assert "STELLWERK_DATA_DIR=/var/lib/stellwerk" in text
    assert "install -d -o 10001 -g 10001 -m 0700 /var/lib/stellwerk" in text


def test_the_health_check_is_the_probe_module() -> None:
    healthcheck = [a for w, a in instructions() if w == "HEALTHCHECK"]
    assert len(healthcheck) == 1
    assert '["python", "-m", "stellwerk.ops.probe", "readyz"]' in healthcheck[0]


@pytest.mark.slow
def test_the_probe_answers_for_a_running_server_and_fails_without_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    env = {"STELLWERK_HOST": "0.0.0.0", "STELLWERK_PORT": str(port)}
    with running_server(tmp_path / "data", port):
        assert probe(["readyz"], env) == 0
        assert probe(["livez"], env) == 0
        assert probe(["startupz"], env) == 0
    assert probe(["readyz"], env) == 1
    assert f"http://127.0.0.1:{port}/readyz" in capsys.readouterr().err
    assert probe(["nonsense"], env) == 2
