"""Server-rendered SVG line charts (no JavaScript, no CDN) for loss / reward / KL curves."""

from __future__ import annotations

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def line_chart(
    title: str,
    points: list[tuple[int, float]],
    *,
    width: int = 420,
    height: int = 180,
    color: str = "#2563eb",
) -> SafeString:
    """One curve as an accessible inline SVG (a <title> and a text summary for screen readers)."""
    if not points:
        return format_html('<p class="muted">{}: no data yet.</p>', title)
    pad_l, pad_r, pad_t, pad_b = 48, 10, 22, 24
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    w, h = width - pad_l - pad_r, height - pad_t - pad_b

    def sx(x: float) -> float:
        return pad_l + (x - x0) / (x1 - x0) * w

    def sy(y: float) -> float:
        return pad_t + (1 - (y - y0) / (y1 - y0)) * h

    path = " ".join(f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for i, (x, y) in enumerate(points))
    dots = ""
    if len(points) <= 40:
        dots = format_html_join(
            "",
            '<circle cx="{}" cy="{}" r="2" fill="{}"/>',
            ((f"{sx(x):.1f}", f"{sy(y):.1f}", color) for x, y in points),
        )
    summary = f"{title}: {len(points)} points, step {x0} to {max(xs)}, from {_fmt(ys[0])} to {_fmt(ys[-1])} (min {_fmt(min(ys))}, max {_fmt(max(ys))})"
    return format_html(
        '<figure class="chart"><svg role="img" viewBox="0 0 {w} {h}" width="{w}" height="{h}" aria-label="{summary}">'
        "<title>{summary}</title>"
        '<rect x="{l}" y="{t}" width="{iw}" height="{ih}" fill="none" stroke="#ccc"/>'
        '<text x="{l}" y="14" font-size="12" font-weight="bold">{title}</text>'
        '<text x="{lx}" y="{ty}" font-size="10" text-anchor="end">{ymax}</text>'
        '<text x="{lx}" y="{by}" font-size="10" text-anchor="end">{ymin}</text>'
        '<text x="{l}" y="{bx}" font-size="10">{xmin}</text>'
        '<text x="{r}" y="{bx}" font-size="10" text-anchor="end">step {xmax}</text>'
        '<path d="{path}" fill="none" stroke="{color}" stroke-width="1.5"/>{dots}</svg>'
        "<figcaption class=\"muted\">{summary}</figcaption></figure>",
        w=width, h=height, summary=summary, l=pad_l, t=pad_t, iw=w, ih=h, title=title, lx=pad_l - 4,
        ty=pad_t + 8, by=pad_t + h, ymax=_fmt(y1), ymin=_fmt(y0), bx=height - 6, xmin=x0, r=pad_l + w,
        xmax=max(xs), path=path, color=color, dots=dots or mark_safe(""),
    )  # fmt: skip
