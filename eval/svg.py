"""Small inline SVG charts for the self-contained report (no JavaScript, no CDN): scatter + fitted line, histograms."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

import numpy as np

WIDTH, HEIGHT = 560, 300
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 28, 48
LEGEND_ROW = 16
COLOURS = ("#2a6fdb", "#e0573a", "#2f9e59", "#8a56d8", "#c9932b")


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering ``[low, high]``."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low]
    raw = (high - low) / count
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if raw <= m * step)
    start = math.ceil(low / step - 1e-9) * step
    return [round(start + i * step, 12) for i in range(int((high - start) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.4g}"


class _Frame:
    """Maps data coordinates to the plot area and draws the axes."""

    def __init__(self, x_range: tuple[float, float], y_range: tuple[float, float]):
        self.x0, self.x1 = x_range
        self.y0, self.y1 = y_range
        if self.x1 <= self.x0:
            self.x1 = self.x0 + 1.0
        if self.y1 <= self.y0:
            self.y1 = self.y0 + 1.0

    def x(self, v: float) -> float:
        return LEFT + (v - self.x0) / (self.x1 - self.x0) * (WIDTH - LEFT - RIGHT)

    def y(self, v: float) -> float:
        return HEIGHT - BOTTOM - (v - self.y0) / (self.y1 - self.y0) * (HEIGHT - TOP - BOTTOM)

    def axes(self, x_label: str, y_label: str, title: str) -> list[str]:
        parts = [f'<rect x="{LEFT}" y="{TOP}" width="{WIDTH - LEFT - RIGHT}" height="{HEIGHT - TOP - BOTTOM}" '
                 'fill="#fafafa" stroke="#999"/>',
                 f'<text x="{WIDTH / 2}" y="18" text-anchor="middle" class="t">{escape(title)}</text>',
                 f'<text x="{WIDTH / 2}" y="{HEIGHT - 8}" text-anchor="middle">{escape(x_label)}</text>',
                 f'<text x="14" y="{HEIGHT / 2}" text-anchor="middle" transform="rotate(-90 14 {HEIGHT / 2})">'
                 f'{escape(y_label)}</text>']
        for t in nice_ticks(self.x0, self.x1):
            if self.x0 <= t <= self.x1:
                parts.append(f'<text x="{self.x(t):.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">{_fmt(t)}</text>')
        for t in nice_ticks(self.y0, self.y1):
            if self.y0 <= t <= self.y1:
                parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{self.y(t):.1f}" y2="{self.y(t):.1f}" '
                             'stroke="#e3e3e3"/>')
                parts.append(f'<text x="{LEFT - 6}" y="{self.y(t) + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
        return parts


def _svg(parts: list[str], label: str, extra_height: int = 0) -> str:
    body = "".join(parts)
    height = HEIGHT + extra_height
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" '
            f'height="{height}" role="img" aria-label="{escape(label)}">{body}</svg>')


def scatter_fit(points: Sequence[tuple[float, float]], intercept: float, slope: float, title: str, x_label: str,
                y_label: str) -> str:
    """Points ``(x, y)`` and the line ``y = intercept + slope * x`` drawn from ``x = 0`` (the extrapolation)."""
    xs = [p[0] for p in points]
    ys = [p[1] for p in points] + [intercept]
    pad = 0.08 * (max(ys) - min(ys) or 1.0)
    frame = _Frame((0.0, max(xs) * 1.05), (min(ys) - pad, max(ys) + pad))
    parts = frame.axes(x_label, y_label, title)
    x_end = max(xs) * 1.05
    parts.append(f'<line x1="{frame.x(0):.1f}" y1="{frame.y(intercept):.1f}" x2="{frame.x(x_end):.1f}" '
                 f'y2="{frame.y(intercept + slope * x_end):.1f}" stroke="{COLOURS[1]}" stroke-width="2"/>')
    for x, y in points:
        parts.append(f'<circle cx="{frame.x(x):.1f}" cy="{frame.y(y):.1f}" r="3.5" fill="{COLOURS[0]}"/>')
    parts.append(f'<circle cx="{frame.x(0):.1f}" cy="{frame.y(intercept):.1f}" r="5" fill="{COLOURS[1]}"/>')
    parts.append(f'<text x="{frame.x(0) + 8:.1f}" y="{frame.y(intercept) - 8:.1f}">extrapolated {_fmt(intercept)}'
                 '</text>')
    return _svg(parts, title)


def histogram(series: dict[str, Sequence[float]], title: str, x_label: str, bins: int = 24) -> str:
    """Overlaid histograms of each named series on shared bins, with a legend and each series' mean marked."""
    finite = {k: np.asarray([v for v in vals if v is not None and math.isfinite(v)], np.float64)
              for k, vals in series.items()}
    finite = {k: v for k, v in finite.items() if v.size}
    if not finite:
        return _svg(_Frame((0, 1), (0, 1)).axes(x_label, "count", title + " (no values)"), title)
    every = np.concatenate(list(finite.values()))
    low, high = float(every.min()), float(every.max())
    if high <= low:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, bins + 1)
    counts = {k: np.histogram(v, edges)[0] for k, v in finite.items()}
    top = max(int(c.max()) for c in counts.values())
    frame = _Frame((low, high), (0.0, top * 1.1))
    parts = frame.axes(x_label, "count", title)
    for i, (name, c) in enumerate(counts.items()):
        colour = COLOURS[i % len(COLOURS)]
        for j, height in enumerate(c):
            if height:
                x0, x1 = frame.x(edges[j]), frame.x(edges[j + 1])
                parts.append(f'<rect x="{x0:.1f}" y="{frame.y(height):.1f}" width="{max(x1 - x0 - 1, 1):.1f}" '
                             f'height="{frame.y(0) - frame.y(height):.1f}" fill="{colour}" fill-opacity="0.45"/>')
        mean = float(finite[name].mean())
        parts.append(f'<line x1="{frame.x(mean):.1f}" x2="{frame.x(mean):.1f}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" '
                     f'stroke="{colour}" stroke-width="2" stroke-dasharray="5 3"/>')
        parts.append(f'<rect x="{LEFT}" y="{HEIGHT + 2 + LEGEND_ROW * i}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{LEFT + 15}" y="{HEIGHT + 11 + LEGEND_ROW * i}">{escape(name)} '
                     f'(n={finite[name].size}, mean {_fmt(mean)}, dashed line)</text>')
    return _svg(parts, title, LEGEND_ROW * len(counts) + 4)


def lines(series: dict[str, Sequence[tuple[float, float]]], title: str, x_label: str, y_label: str) -> str:
    """Each named series of ``(x, y)`` points as a polyline (points sorted by x), with a legend."""
    finite = {k: sorted((float(x), float(y)) for x, y in pts if math.isfinite(x) and math.isfinite(y))
              for k, pts in series.items()}
    finite = {k: v for k, v in finite.items() if v}
    if not finite:
        return _svg(_Frame((0, 1), (0, 1)).axes(x_label, y_label, title + " (no values)"), title)
    xs = [x for pts in finite.values() for x, _ in pts]
    ys = [y for pts in finite.values() for _, y in pts]
    pad = 0.05 * (max(ys) - min(ys) or 1.0)
    frame = _Frame((min(xs), max(xs)), (min(ys) - pad, max(ys) + pad))
    parts = frame.axes(x_label, y_label, title)
    for i, (name, pts) in enumerate(finite.items()):
        colour = COLOURS[i % len(COLOURS)]
        path = " ".join(f"{frame.x(x):.1f},{frame.y(y):.1f}" for x, y in pts)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.6"/>')
        if len(pts) == 1:
            parts.append(f'<circle cx="{frame.x(pts[0][0]):.1f}" cy="{frame.y(pts[0][1]):.1f}" r="3" '
                         f'fill="{colour}"/>')
        parts.append(f'<rect x="{LEFT}" y="{HEIGHT + 2 + LEGEND_ROW * i}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{LEFT + 15}" y="{HEIGHT + 11 + LEGEND_ROW * i}">{escape(name)} '
                     f'({len(pts)} points, last {_fmt(pts[-1][1])})</text>')
    return _svg(parts, title, LEGEND_ROW * len(finite) + 4)
