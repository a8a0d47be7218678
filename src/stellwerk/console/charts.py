"""Small inline SVG charts: a series scaled into a fixed box, as the points of a polyline.

Pure: numbers in, numbers out; the template draws the SVG (`_charts.html`), escaped like the
rest of the page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

WIDTH: Final = 300
HEIGHT: Final = 60


@dataclass(frozen=True, slots=True)
class Chart:
    label: str
    unit: str
    points: str  # "x,y x,y ...", empty with fewer than two values
    latest: float
    peak: float
    width: int = WIDTH
    height: int = HEIGHT


def chart(values: Sequence[float], *, label: str, unit: str) -> Chart:
    """`values` (oldest first) scaled to their maximum, left to right across the box."""
    peak = max(values, default=0.0)
    top = peak if peak > 0 else 1.0
    points = ""
    if len(values) >= 2:
        step = WIDTH / (len(values) - 1)
        points = " ".join(
            f"{i * step:.1f},{HEIGHT - (v / top) * (HEIGHT - 4) - 2:.1f}"
            for i, v in enumerate(values)
        )
    return Chart(label, unit, points, values[-1] if values else 0.0, peak)
