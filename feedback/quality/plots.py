"""Server-rendered SVG plots (no JavaScript, no outside assets). Every label is escaped."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from feedback.quality.leaderboard import Standing


def leaderboard_svg(standings: Sequence[Standing], *, title: str = "Leaderboard", width: int = 720) -> str:
    """One row per version: the Bradley-Terry rating as a dot, its bootstrap interval as a bar, Elo as a ring."""
    row_h, top, left, right = 28, 48, 220, 40
    height = top + row_h * max(len(standings), 1) + 40
    values = [v for s in standings for v in (s.rating, s.elo, s.ci_low, s.ci_high) if v is not None]
    lo, hi = (min(values), max(values)) if values else (900.0, 1100.0)
    if hi - lo < 50:
        mid = (hi + lo) / 2
        lo, hi = mid - 25, mid + 25
    pad = (hi - lo) * 0.08
    lo, hi = lo - pad, hi + pad
    plot_w = width - left - right

    def x(v: float) -> float:
        return left + (v - lo) / (hi - lo) * plot_w

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" '
        'font-family="system-ui, sans-serif" font-size="13">',
        f"<title>{escape(title)}</title>",
        f'<rect width="{width}" height="{height}" fill="#fff"/>',
        f'<text x="{left}" y="22" font-size="15" font-weight="600">{escape(title)}</text>',
        f'<text x="{left}" y="38" fill="#555">Bradley-Terry rating (dot) with 95% bootstrap interval (bar); '
        "Elo (ring)</text>",
    ]
    # axis ticks
    step = _nice_step((hi - lo) / 6)
    tick = (lo // step + 1) * step
    axis_y = top + row_h * max(len(standings), 1) + 6
    while tick < hi:
        tx = x(tick)
        parts.append(f'<line x1="{tx:.1f}" y1="{top - 6}" x2="{tx:.1f}" y2="{axis_y}" stroke="#eee"/>')
        parts.append(
            f'<text x="{tx:.1f}" y="{axis_y + 16}" text-anchor="middle" fill="#555">{tick:.0f}</text>'
        )
        tick += step
    if not standings:
        parts.append(
            f'<text x="{left}" y="{top + 18}" fill="#555">No comparisons between versions yet.</text>'
        )
    for i, s in enumerate(standings):
        cy = top + row_h * i + row_h / 2
        name = str(s.player)
        label = name if len(name) <= 28 else name[:27] + "…"
        parts.append(
            f'<text x="{left - 10}" y="{cy + 4:.1f}" text-anchor="end">{escape(label)}'
            f"<title>{escape(name)}: {s.rating:.0f} ({s.comparisons} comparisons)</title></text>"
        )
        if s.ci_low is not None and s.ci_high is not None:
            parts.append(
                f'<line x1="{x(s.ci_low):.1f}" y1="{cy:.1f}" x2="{x(s.ci_high):.1f}" y2="{cy:.1f}" '
                'stroke="#7aa6d8" stroke-width="6" stroke-linecap="round"/>'
            )
        parts.append(
            f'<circle cx="{x(s.elo):.1f}" cy="{cy:.1f}" r="6" fill="none" stroke="#d8742a" stroke-width="2"/>'
        )
        parts.append(f'<circle cx="{x(s.rating):.1f}" cy="{cy:.1f}" r="4.5" fill="#1f4e8c"/>')
        parts.append(
            f'<text x="{width - right + 4}" y="{cy + 4:.1f}" fill="#333" font-size="11">{s.rating:.0f}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


def _nice_step(raw: float) -> float:
    if raw <= 0:
        return 10.0
    magnitude = 10 ** len(str(int(raw))) / 10
    for m in (1, 2, 5, 10):
        if raw <= m * magnitude:
            return m * magnitude
    return 10 * magnitude
