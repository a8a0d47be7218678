"""Functions that function targets in the end-to-end tests call."""

from __future__ import annotations

from typing import Any

CALLS: list[Any] = []


def record(event: Any) -> None:
    CALLS.append(event)
