"""Plot the size/read/build frontier of `bench/build.py --read --json` runs as an SVG.

Each setting is one point per panel at its worst ratio over the trees measured (ratios to
the bakery's image in the same run): left, image size against the slower of the two cold
reads; right, image size against build time. Dashed lines are issue 23's targets
(≤ 0.85× size, ≤ 1.0× reads, ≤ 1.5× build); filled points meet all of them on every tree.
Several JSON files are merged by tree and setting, later runs winning.
No plotting library: plain SVG, so it runs with the project's own dependencies.

Usage: python bench/frontier.py RUN.json [RUN.json…] --svg docs/frontier.svg [--markdown]
       [--exclude LABEL]…
"""

from __future__ import annotations

import argparse
import html
import json
from dataclasses import dataclass
from pathlib import Path

SIZE_TARGET, READ_TARGET, BUILD_TARGET = 0.85, 1.0, 1.5
WIDTH, HEIGHT, MARGIN = 440, 320, 52


@dataclass(frozen=True)
class Point:
    label: str
    size: float
    read: float
    build: float

    @property
    def meets(self) -> bool:
        return self.size <= SIZE_TARGET and self.read <= READ_TARGET and self.build <= BUILD_TARGET


def merge(paths: list[Path]) -> dict[str, dict[str, dict[str, float]]]:
    """tree → setting → figures. Every ratio is against the bakery image of its own run, so
    settings from several runs can share a table; a later run's figures replace an earlier
    run's for the same tree and setting."""
    trees: dict[str, dict[str, dict[str, float]]] = {}
    for path in paths:
        for tree, data in json.loads(path.read_text())["trees"].items():
            trees.setdefault(tree, {}).update(data["settings"])
    return trees


def points(trees: dict[str, dict[str, dict[str, float]]]) -> list[Point]:
    labels = dict.fromkeys(label for settings in trees.values() for label in settings)
    found = []
    for label in labels:
        if label == "bakery":
            continue
        rows = [settings[label] for settings in trees.values() if label in settings]
        if len(rows) != len(trees):
            continue  # not measured on every tree: no worst case to show
        found.append(
            Point(
                label,
                max(r["size"] for r in rows),
                max(max(r["read_tree"], r["read_file"]) for r in rows),
                max(r["build"] for r in rows),
            )
        )
    return found


def panel(x0: int, pts: list[Point], xname: str, xkey: str, xtarget: float) -> list[str]:
    xs: list[float] = [getattr(p, xkey) for p in pts] + [xtarget]
    ys = [p.size for p in pts] + [SIZE_TARGET, 1.0]
    xmax, ymin, ymax = max(xs) * 1.1, min(ys) - 0.05, max(ys) + 0.05

    def sx(v: float) -> float:
        return x0 + MARGIN + v / xmax * (WIDTH - MARGIN - 10)

    def sy(v: float) -> float:
        return HEIGHT - MARGIN - (v - ymin) / (ymax - ymin) * (HEIGHT - MARGIN - 20)

    out = [
        f'<rect x="{x0 + MARGIN}" y="20" width="{WIDTH - MARGIN - 10}" '
        f'height="{HEIGHT - MARGIN - 20}" fill="none" stroke="#888"/>',
        f'<line x1="{sx(xtarget):.1f}" y1="20" x2="{sx(xtarget):.1f}" y2="{HEIGHT - MARGIN}" '
        'stroke="#c33" stroke-dasharray="4 3"/>',
        f'<line x1="{x0 + MARGIN}" y1="{sy(SIZE_TARGET):.1f}" x2="{x0 + WIDTH - 10}" '
        f'y2="{sy(SIZE_TARGET):.1f}" stroke="#c33" stroke-dasharray="4 3"/>',
        f'<text x="{x0 + MARGIN + (WIDTH - MARGIN) / 2:.0f}" y="{HEIGHT - 12}" '
        f'text-anchor="middle">{xname} (× bakery, worst tree)</text>',
        f'<text x="{x0 + 14}" y="{HEIGHT / 2:.0f}" text-anchor="middle" '
        f'transform="rotate(-90 {x0 + 14} {HEIGHT / 2:.0f})">size (× bakery, worst tree)</text>',
    ]
    for tick in (0.5, 1.0, 1.5, 2.0, 3.0, 4.0):
        if tick < xmax:
            out.append(
                f'<text x="{sx(tick):.1f}" y="{HEIGHT - MARGIN + 14}" '
                f'text-anchor="middle">{tick:g}</text>'
            )
    for tick in (0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0, 1.1, 1.2):
        if ymin < tick < ymax:
            out.append(
                f'<text x="{x0 + MARGIN - 4}" y="{sy(tick) + 4:.1f}" '
                f'text-anchor="end">{tick:g}</text>'
            )
    for p in pts:
        x, y = sx(getattr(p, xkey)), sy(p.size)
        fill = "#2a7" if p.meets else "white"
        out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{fill}" stroke="#2a7"/>')
        short = p.label.removeprefix("sysext sq ").removeprefix("sysext ").split("/")[0]
        # Labels near the right edge go left of their point, so that none runs out.
        right = x > x0 + WIDTH - 110
        anchor, dx = ("end", -6) if right else ("start", 6)
        out.append(
            f'<text x="{x + dx:.1f}" y="{y - 5:.1f}" text-anchor="{anchor}">'
            f"{html.escape(short)}</text>"
        )
    return out


def svg(pts: list[Point]) -> str:
    body = panel(0, pts, "slower cold read", "read", READ_TARGET)
    body += panel(WIDTH + 20, pts, "build time", "build", BUILD_TARGET)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * WIDTH + 20}" height="{HEIGHT}" '
        'font-family="sans-serif" font-size="10">\n'
        "<title>sysext squashfs settings against the bakery image: size, cold reads, build "
        "time</title>\n" + "\n".join(body) + "\n</svg>\n"
    )


def markdown(trees: dict[str, dict[str, dict[str, float]]]) -> str:
    """One table row per setting: size, build, tree read, file read (× bakery) per tree."""
    names = list(trees)
    head = "| setting | " + " | ".join(names) + " |\n|---|" + "---|" * len(names) + "\n"
    rows = []
    labels = dict.fromkeys(label for settings in trees.values() for label in settings)
    for label in labels:
        cells = []
        for name in names:
            r = trees[name].get(label)
            cells.append(
                "—"
                if r is None
                else f"{r['size']:.2f}, {r['build']:.2f}, {r['read_tree']:.2f}, "
                f"{r['read_file']:.2f}"
            )
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return head + "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="bench/build.py --json files")
    parser.add_argument("--svg", type=Path, required=True)
    parser.add_argument("--markdown", action="store_true", help="also print the table")
    parser.add_argument(
        "--exclude", action="append", default=[], help="leave a setting out (repeatable)"
    )
    args = parser.parse_args()
    trees = merge(args.runs)
    for settings in trees.values():
        for label in args.exclude:
            settings.pop(label, None)
    args.svg.write_text(svg(points(trees)))
    if args.markdown:
        print(markdown(trees), end="")


if __name__ == "__main__":
    main()
