"""The import graph keeps its floors: the seams and storage import nothing above them, the API is
an edge over the service layer, and code outside a package with a face imports the face, never
its modules."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "stellwerk"

# What each lower floor may import of Stellwerk (besides itself and the version).
ALLOWED: dict[str, set[str]] = {
    # The Python client talks HTTP to a server; it needs none of the server's code.
    "stellwerk.client": set(),
    "stellwerk.clock": set(),
    "stellwerk.refs": set(),
    "stellwerk.auth": {"stellwerk.refs"},
    "stellwerk.seams": {"stellwerk.events", "stellwerk.clock", "stellwerk.refs"},
    "stellwerk.rules": {
        "stellwerk.patterns",
        "stellwerk.transform",
        "stellwerk.names",
        "stellwerk.urls",
        "stellwerk.secrets",
        "stellwerk.clock",
    },
    "stellwerk.storage": {
        "stellwerk.seams",
        "stellwerk.clock",
        "stellwerk.refs",
        "stellwerk.events",
        "stellwerk.rules",
        "stellwerk.schemas",
        "stellwerk.auth",
        "stellwerk.names",
        "stellwerk.secrets",
    },
}
# Packages whose modules only their own code imports; everyone else imports the __init__.
FACED: tuple[str, ...] = (
    "stellwerk.seams",
    "stellwerk.storage",
    "stellwerk.rules",
    "stellwerk.service",
    "stellwerk.api",
    "stellwerk.auth",
    "stellwerk.cli",
    "stellwerk.delivery",
    "stellwerk.erasure",
    "stellwerk.ingest",
    "stellwerk.ops",
    "stellwerk.routing",
    "stellwerk.statuspages",
    "stellwerk.awsapi",
    "stellwerk.tracking",
    "stellwerk.sites",
    "stellwerk.console",
    "stellwerk.client",
)
# Capabilities built on the core (DESIGN.md, "Layout"): edges like the API, each on its own.
CAPABILITIES: tuple[str, ...] = (
    "stellwerk.statuspages",
    "stellwerk.awsapi",
    "stellwerk.tracking",
    "stellwerk.sites",
    "stellwerk.console",
)
# What the API may not reach but through the service layer.
BEHIND_THE_SERVICE_LAYER: tuple[str, ...] = (
    "stellwerk.storage",
    "stellwerk.seams",
    "stellwerk.routing",
    "stellwerk.delivery",
    "stellwerk.erasure",
    "stellwerk.compose",
    "stellwerk.roles",
    "stellwerk.stores",
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_package(module: str) -> bool:
    return (SRC / Path(*module.split(".")) / "__init__.py").is_file()


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def imports() -> Iterator[tuple[str, str, int]]:
    """(importing module, imported module, line) for every `stellwerk` import in src/."""
    for path in sorted(PACKAGE.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        importer = module_name(path)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            for target in targets:
                if within(target, "stellwerk"):
                    yield importer, target, node.lineno


def test_lower_floors_import_nothing_above_them() -> None:
    upward = []
    for importer, target, line in imports():
        for floor, allowed in ALLOWED.items():
            if (
                not within(importer, floor)
                or within(target, floor)
                or target in ("stellwerk", "stellwerk.version")
            ):
                continue
            if not any(within(target, ok) for ok in allowed):
                upward.append(f"{importer}:{line} imports {target}")
    assert upward == []


@pytest.mark.parametrize("face", FACED)
def test_code_outside_a_package_imports_its_face(face: str) -> None:
    deep = []
    for importer, target, line in imports():
        if not within(target, face):
            continue
        if is_package(target):
            continue  # a face: the package's __init__
        if not within(importer, target.rpartition(".")[0]):
            deep.append(f"{importer}:{line} imports {target}, not its package's face")
    assert deep == []


def test_the_api_is_an_edge_over_the_service_layer() -> None:
    """Nothing below the API imports it (only the app that mounts it), and it reaches the stores
    and the engine only through the service layer's facades."""
    wrong = []
    for importer, target, line in imports():
        if within(importer, "stellwerk.api"):
            if any(within(target, below) for below in BEHIND_THE_SERVICE_LAYER):
                wrong.append(f"{importer}:{line} imports {target}")
        elif within(target, "stellwerk.api") and not (
            importer in ("stellwerk.app", "stellwerk.capability")
            or any(within(importer, c) for c in CAPABILITIES)
        ):
            wrong.append(f"{importer}:{line} imports {target}")
    assert wrong == []


def test_capabilities_reach_the_core_only_through_its_seams() -> None:
    """A capability calls the facades and `stellwerk.capability`, never the stores or the
    engine, and never another capability: they talk through events on a bus."""
    wrong = []
    for importer, target, line in imports():
        mine = next((c for c in CAPABILITIES if within(importer, c)), None)
        if mine is None:
            continue
        if any(within(target, below) for below in BEHIND_THE_SERVICE_LAYER) or any(
            within(target, other) for other in CAPABILITIES if other != mine
        ):
            wrong.append(f"{importer}:{line} imports {target}")
    assert wrong == []
