"""Inline SVG line charts: no script, no fonts to fetch, readable offline.

    line_chart({"train_loss": (steps, values), ...}, title="loss", x_label="step")
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
W, H, PAD_L, PAD_R, PAD_T, PAD_B = 420, 260, 48, 12, 28, 36


def line_chart(series: dict[str, tuple[Sequence[float], Sequence[float]]], title: str,
               x_label: str, *, y_label: str = "", y_range: tuple[float, float] | None = None,
               x_range: tuple[float, float] | None = None, css_class: str = "chart",
               markers: bool = True) -> str:
    """An SVG element with one polyline per series (points with non-finite values dropped),
    axes with a few ticks and a legend. Each series is `data-series` on its polyline."""
    points = {name: [(float(x), float(y)) for x, y in zip(xs, ys, strict=True)
                     if math.isfinite(float(x)) and math.isfinite(float(y))]
              for name, (xs, ys) in series.items()}
    every = [p for pts in points.values() for p in pts]
    if not every:
        return (f'<svg class="{css_class}" viewBox="0 0 {W} {H}" role="img"><text x="{W / 2}" '
                f'y="{H / 2}" text-anchor="middle">{escape(title)}: no data</text></svg>')
    x0, x1 = x_range or (min(p[0] for p in every), max(p[0] for p in every))
    y0, y1 = y_range or (min(p[1] for p in every), max(p[1] for p in every))
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

    def sx(x: float) -> float:
        return PAD_L + (x - x0) / (x1 - x0) * (W - PAD_L - PAD_R)

    def sy(y: float) -> float:
        return H - PAD_B - (y - y0) / (y1 - y0) * (H - PAD_T - PAD_B)

    out = [f'<svg class="{css_class}" viewBox="0 0 {W} {H}" role="img" '
           f'aria-label="{escape(title)}">',
           f'<text x="{W / 2}" y="16" text-anchor="middle" class="title">{escape(title)}</text>',
           f'<line x1="{PAD_L}" y1="{H - PAD_B}" x2="{W - PAD_R}" y2="{H - PAD_B}" '
           'stroke="#888"/>',
           f'<line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{H - PAD_B}" stroke="#888"/>']
    for i in range(5):
        xv, yv = x0 + (x1 - x0) * i / 4, y0 + (y1 - y0) * i / 4
        out.append(f'<text x="{sx(xv):.1f}" y="{H - PAD_B + 14}" text-anchor="middle" '
                   f'class="tick">{_fmt(xv)}</text>')
        out.append(f'<text x="{PAD_L - 4}" y="{sy(yv) + 4:.1f}" text-anchor="end" '
                   f'class="tick">{_fmt(yv)}</text>')
    out.append(f'<text x="{W / 2}" y="{H - 4}" text-anchor="middle" class="label">'
               f'{escape(x_label)}</text>')
    if y_label:
        out.append(f'<text x="12" y="{H / 2}" transform="rotate(-90 12 {H / 2})" '
                   f'text-anchor="middle" class="label">{escape(y_label)}</text>')
    for k, (name, pts) in enumerate(points.items()):
        colour = COLOURS[k % len(COLOURS)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        out.append(f'<polyline data-series="{escape(name)}" fill="none" stroke="{colour}" '
                   f'stroke-width="1.8" points="{path}"/>')
        if markers and len(pts) <= 40:
            out.extend(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.2" fill="{colour}"/>'
                       for x, y in pts)
        out.append(f'<text x="{W - PAD_R - 4}" y="{PAD_T + 12 + 13 * k}" text-anchor="end" '
                   f'fill="{colour}" class="legend">{escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def _fmt(v: float) -> str:
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if float(v).is_integer():
        return str(int(v))
    return f"{v:.2f}"
