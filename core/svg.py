"""Small server-side SVG charts for the operator console: no script, no CDN."""

from __future__ import annotations

from html import escape

WIDTH, HEIGHT, PAD = 640, 200, 48


def bar_chart(points: list[tuple[str, float]], *, title: str, color: str = "#417690") -> str:
    """Bars with the first, middle and last labels under them."""
    if not points:
        return _empty(title)
    top = max(value for _, value in points) or 1.0
    step = (WIDTH - 2 * PAD) / len(points)
    bars = []
    for index, (label, value) in enumerate(points):
        height = (HEIGHT - 2 * PAD) * value / top
        x = PAD + index * step
        bars.append(
            f'<rect x="{x:.1f}" y="{HEIGHT - PAD - height:.1f}" width="{min(max(step - 2, 1), 24):.1f}" '
            f'height="{height:.1f}" fill="{color}"><title>{escape(label)}: {value:g}</title></rect>'
        )
    labels = [
        f'<text x="{PAD + i * step:.1f}" y="{HEIGHT - PAD + 14}" font-size="10">{escape(points[i][0])}</text>'
        for i in sorted({0, len(points) // 2, len(points) - 1})
    ]
    return _frame(title, top, "".join(bars) + "".join(labels))


def line_chart(
    series: dict[str, list[tuple[str, float]]],
    *,
    title: str,
    labels: list[str] | None = None,
    markers: list[tuple[str, str]] | None = None,
) -> str:
    """One polyline per series over shared x labels (in order of appearance, or `labels`); `markers`:
    (x label, text) drawn as a dashed vertical line where the label is (a model version served from then)."""
    labels = labels or list(dict.fromkeys(label for points in series.values() for label, _ in points))
    if not labels or not any(series.values()):
        return _empty(title)
    top = max((value for points in series.values() for _, value in points), default=1.0) or 1.0
    step = (WIDTH - 2 * PAD) / max(len(labels) - 1, 1)
    colors = ["#417690", "#d9822b", "#2e8540", "#a8323e"]
    parts = []
    for number, (name, points) in enumerate(series.items()):
        color = colors[number % len(colors)]
        coordinates = [
            (PAD + labels.index(label) * step, HEIGHT - PAD - (HEIGHT - 2 * PAD) * value / top)
            for label, value in points
        ]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coordinates)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{path}"/>')
        parts += [
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"><title>{escape(name)} '
            f"{escape(label)}: {value:g}</title></circle>"
            for (x, y), (label, value) in zip(coordinates, points, strict=True)
        ]
        parts.append(
            f'<text x="{WIDTH - PAD - 120}" y="{PAD + 14 * number}" font-size="11" fill="{color}">'
            f"{escape(name)}</text>"
        )
    parts += [
        f'<text x="{PAD + i * step:.1f}" y="{HEIGHT - PAD + 14}" font-size="10">{escape(labels[i])}</text>'
        for i in sorted({0, len(labels) - 1})
    ]
    for label, text in markers or []:
        if label in labels:
            x = PAD + labels.index(label) * step
            parts.append(
                f'<line x1="{x:.1f}" y1="{PAD}" x2="{x:.1f}" y2="{HEIGHT - PAD}" stroke="#777" '
                f'stroke-dasharray="3,3"/><text x="{x + 2:.1f}" y="{PAD + 10}" font-size="10" '
                f'fill="#555">{escape(text)}</text>'
            )
    return _frame(title, top, "".join(parts))


def _frame(title: str, top: float, body: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-label="{escape(title)}"><text x="{PAD}" y="16" font-size="13">{escape(title)}</text>'
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" stroke="#999"/>'
        f'<text x="2" y="{PAD + 4}" font-size="10">{top:.3g}</text>{body}</svg>'
    )


def _empty(title: str) -> str:
    return _frame(title, 0, f'<text x="{PAD}" y="{HEIGHT / 2}" font-size="12">no data yet</text>')
