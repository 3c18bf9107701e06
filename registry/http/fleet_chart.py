"""Adoption per version over time as an inline SVG, drawn on the server (no script, no CDN).

Input: the fleet samples (fleet_samples: hosts whose last fetched image was each version, per
10-minute slot) plus the current counts as the last point. One polyline per version, a
legend, the time span and the host scale as text; colours come from a fixed palette.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 44, 12, 12, 28
PALETTE = ("#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c", "#0891b2", "#4b5563")


def adoption_svg(
    samples: Sequence[tuple[dt.datetime, str, int]], now: dt.datetime, current: Mapping[str, int]
) -> Markup:
    """`samples`: (time, version, hosts); `current`: version → hosts now."""
    points: dict[str, dict[dt.datetime, int]] = {}
    for at, version, hosts in samples:
        points.setdefault(version, {})[at] = hosts
    for version, hosts in current.items():
        points.setdefault(version, {})[now] = hosts
    times = sorted({t for series in points.values() for t in series})
    if not times:
        return Markup('<p class="muted">No managed host has fetched this extension yet.</p>')
    start, end = times[0], times[-1]
    span = max((end - start).total_seconds(), 1.0)
    top = max(max(s.values()) for s in points.values()) or 1
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(at: dt.datetime) -> float:
        return LEFT + plot_w * ((at - start).total_seconds() / span if len(times) > 1 else 1.0)

    def y(hosts: int) -> float:
        return TOP + plot_h * (1 - hosts / top)

    parts = [
        f'<svg class="adoption" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="Managed hosts per version over time" xmlns="http://www.w3.org/2000/svg">',
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - RIGHT}" y2="{TOP + plot_h}" '
        'stroke="currentColor" stroke-opacity=".4"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}" '
        'stroke="currentColor" stroke-opacity=".4"/>',
        f'<text x="{LEFT - 6}" y="{TOP + 10}" text-anchor="end" font-size="11">{top}</text>',
        f'<text x="{LEFT - 6}" y="{TOP + plot_h}" text-anchor="end" font-size="11">0</text>',
        f'<text x="{LEFT}" y="{HEIGHT - 8}" font-size="11">{start:%Y-%m-%d %H:%M}</text>',
        f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 8}" text-anchor="end" font-size="11">'
        f"{end:%Y-%m-%d %H:%M} UTC</text>",
    ]
    for index, version in enumerate(sorted(points)):
        colour = PALETTE[index % len(PALETTE)]
        series = sorted(points[version].items())
        coords = " ".join(f"{x(at):.1f},{y(h):.1f}" for at, h in series)
        label = escape(version)
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{coords}">'
            f"<title>{label}</title></polyline>"
        )
        for at, hosts in series:
            parts.append(
                f'<circle cx="{x(at):.1f}" cy="{y(hosts):.1f}" r="2.5" fill="{colour}">'
                f"<title>{label}: {hosts} host(s) at {at:%Y-%m-%d %H:%M}</title></circle>"
            )
        parts.append(
            f'<text x="{LEFT + 8 + 90 * index}" y="{TOP + 12}" fill="{colour}" '
            f'font-size="12">■ {label}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))
