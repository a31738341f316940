"""A line plot of one per-round metric as inline SVG, drawn on the server.

No plotting library and no script: the page must load nothing from anywhere, and matplotlib is
only a benchmark extra. Every string that goes into the SVG is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

WIDTH, HEIGHT = 640, 280
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 16, 44


def nice_ticks(low: float, high: float, count: int = 6) -> list[float]:
    """Round tick values within [low, high] (1, 2, 2.5 or 5 times a power of ten apart)."""
    if high <= low:
        return [low]
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(factor * magnitude for factor in (1, 2, 2.5, 5, 10) if factor * magnitude >= raw)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        if value >= low - step * 1e-9:
            ticks.append(round(value, 12))
        value += step
    return ticks


def _value_range(values: Sequence[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    if high == low:
        pad = abs(low) * 0.1 or 1.0
        return low - pad, high + pad
    pad = (high - low) * 0.08
    return low - pad, high + pad


def _format(value: float) -> str:
    return f"{value:.4g}"


def line_plot_svg(points: Sequence[tuple[int, float]], *, y_label: str, title: str) -> str:
    """`points` are (round, value), in round order; at least one."""
    if not points:
        raise ValueError("a plot needs at least one point")
    rounds = [round_number for round_number, _ in points]
    values = [value for _, value in points]
    y_low, y_high = _value_range(values)
    # Half a round of air on each side, so the first and last points are not drawn on the frame.
    x_low, x_high = min(rounds) - 0.5, max(rounds) + 0.5
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(round_number: float) -> float:
        return LEFT + (round_number - x_low) / (x_high - x_low) * plot_width

    def y(value: float) -> float:
        return TOP + (1 - (value - y_low) / (y_high - y_low)) * plot_height

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="100%" preserveAspectRatio="xMidYMid meet" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_width}" height="{plot_height}" fill="#fff" stroke="#999"/>',
    ]
    for tick in nice_ticks(y_low, y_high):
        ty = y(tick)
        parts.append(f'<line x1="{LEFT}" x2="{LEFT + plot_width}" y1="{ty:.1f}" y2="{ty:.1f}" stroke="#eee"/>')
        parts.append(
            f'<text x="{LEFT - 6}" y="{ty + 4:.1f}" text-anchor="end" font-size="11">{_format(tick)}</text>'
        )
    x_step = max(1, math.ceil((max(rounds) - min(rounds) + 1) / 10))
    for round_number in range(min(rounds), max(rounds) + 1, x_step):
        tx = x(round_number)
        parts.append(
            f'<text x="{tx:.1f}" y="{TOP + plot_height + 16}" text-anchor="middle" font-size="11">{round_number}</text>'
        )
    parts.append(
        f'<text x="{LEFT + plot_width / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle" font-size="12">round</text>'
    )
    parts.append(
        f'<text x="14" y="{TOP + plot_height / 2:.1f}" text-anchor="middle" font-size="12" '
        f'transform="rotate(-90 14 {TOP + plot_height / 2:.1f})">{escape(y_label)}</text>'
    )
    if len(points) > 1:
        path = " ".join(f"{x(r):.1f},{y(v):.1f}" for r, v in points)
        parts.append(f'<polyline class="series" points="{path}" fill="none" stroke="#1f5fa8" stroke-width="2"/>')
    for round_number, value in points:
        parts.append(
            f'<circle class="point" cx="{x(round_number):.1f}" cy="{y(value):.1f}" r="3.5" fill="#1f5fa8">'
            f"<title>round {round_number}: {_format(value)}</title></circle>"
        )
    parts.append("</svg>")
    return "".join(parts)


__all__ = ["line_plot_svg", "nice_ticks"]
