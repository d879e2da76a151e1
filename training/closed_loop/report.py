"""Result lines and the win-rate plot of a closed-loop run (Django-free)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

KEYS = ("model", "preference", "method", "win_rate", "rm_accuracy", "empty_rate", "seconds")


@dataclass
class ResultLine:
    """One JSON line per preference, method and round."""

    model: str
    preference: str
    method: str
    win_rate: float | None
    rm_accuracy: float | None
    empty_rate: float | None
    seconds: float
    round: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        data = asdict(self)
        extra = data.pop("extra")
        for key in ("win_rate", "rm_accuracy", "empty_rate"):
            value = data[key]
            data[key] = (
                None if value is None or (isinstance(value, float) and math.isnan(value)) else round(value, 4)
            )
        data["seconds"] = round(self.seconds, 1)
        return json.dumps({**data, **extra}, sort_keys=False)


def plot_win_rates(lines: Sequence[ResultLine], path: Path, *, title: str = "") -> Path:
    """Win-rate against the base per method and round, one panel per preference, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prefs = sorted({ln.preference for ln in lines if ln.win_rate is not None})
    panels = max(1, len(prefs))
    fig, axes = plt.subplots(1, panels, figsize=(max(7.0, 5.5 * panels), 4.4), squeeze=False)
    for ax, pref in zip(axes[0], prefs, strict=False):
        rows = [ln for ln in lines if ln.preference == pref and ln.win_rate is not None]
        methods = sorted({ln.method for ln in rows})
        rounds = sorted({ln.round for ln in rows})
        width = 0.8 / max(1, len(rounds))
        for j, rnd in enumerate(rounds):
            xs, ys = [], []
            for i, m in enumerate(methods):
                match = [ln for ln in rows if ln.method == m and ln.round == rnd]
                if match:
                    xs.append(i + (j - (len(rounds) - 1) / 2) * width)
                    ys.append(match[0].win_rate)
            bars = ax.bar(xs, ys, width=width, label=f"round {rnd}")
            ax.bar_label(bars, fmt="%.2f", fontsize=8)
        ax.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="base (0.5)")
        ax.set_xticks(range(len(methods)), [m.upper() for m in methods])
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("win-rate vs base (held-out prompts)")
        ax.set_title(f"preference: {pref}")
        ax.legend(fontsize=8, loc="lower right")
    if title:
        import textwrap

        fig.suptitle("\n".join(textwrap.wrap(title, 90)), fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
