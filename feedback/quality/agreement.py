"""Krippendorff's alpha from a coincidence matrix (Krippendorff 2011, "Computing Krippendorff's alpha-reliability").

Data: ``{unit: {coder: value}}``. Units with fewer than two values are not pairable and are ignored.
Levels: ``nominal`` (values equal or not), ``ordinal`` (distance by the ranks between two values, weighted by
how often the values in between occur), ``interval`` (squared difference).

Per coder: ``coder_alpha`` uses only the pairs of values that involve the coder (their value against each
other coder's on the same unit, weighted 1/(m_u - 1) as in the coincidence matrix) for the observed
disagreement, and the whole data's expected disagreement: 1 means the coder agrees with the others perfectly,
0 as much as chance, below 0 systematically less.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass

import numpy as np

Data = Mapping[Hashable, Mapping[Hashable, Hashable]]
LEVELS = ("nominal", "ordinal", "interval")


@dataclass(frozen=True, slots=True)
class Coincidences:
    values: list[Hashable]
    o: np.ndarray  # o[c, k]: coincidences of value c with value k
    delta2: np.ndarray  # squared difference of each pair of values

    @property
    def n_c(self) -> np.ndarray:
        return self.o.sum(axis=1)

    @property
    def n(self) -> float:
        return float(self.o.sum())

    def expected_disagreement(self) -> float:
        n, n_c = self.n, self.n_c
        if n <= 1:
            return 0.0
        return float((np.outer(n_c, n_c) * self.delta2).sum() / (n * (n - 1)))


def _pairable(data: Data) -> dict[Hashable, dict[Hashable, Hashable]]:
    return {u: dict(codes) for u, codes in data.items() if sum(v is not None for v in codes.values()) >= 2}


def _delta2(values: list[Hashable], n_c: np.ndarray, level: str) -> np.ndarray:
    m = len(values)
    if level == "nominal":
        return 1.0 - np.eye(m)
    if level == "interval":
        x = np.array(values, dtype=float)
        return (x[:, None] - x[None, :]) ** 2
    if level == "ordinal":
        cum = np.concatenate([[0.0], np.cumsum(n_c)])  # values are sorted
        d = np.zeros((m, m))
        for c in range(m):
            for k in range(c, m):
                between = cum[k + 1] - cum[c]  # sum of n_g for g from c to k
                d[c, k] = d[k, c] = (between - (n_c[c] + n_c[k]) / 2.0) ** 2
        return d
    raise ValueError(f"level must be one of {LEVELS}, got {level!r}")


def coincidences(data: Data, level: str) -> Coincidences:
    units = _pairable(data)
    values = sorted({v for codes in units.values() for v in codes.values() if v is not None}, key=_sort_key)
    index = {v: i for i, v in enumerate(values)}
    o = np.zeros((len(values), len(values)))
    for codes in units.values():
        vals = [index[v] for v in codes.values() if v is not None]
        m_u = len(vals)
        counts = np.bincount(vals, minlength=len(values)).astype(float)
        # every ordered pair of values from different coders, weighted 1/(m_u - 1)
        o += (np.outer(counts, counts) - np.diag(counts)) / (m_u - 1)
    return Coincidences(values=values, o=o, delta2=_delta2(values, o.sum(axis=1), level))


def _sort_key(v: Hashable) -> tuple[int, object]:
    return (0, v) if isinstance(v, int | float) else (1, str(v))


def alpha(data: Data, level: str = "nominal") -> float | None:
    """Krippendorff's alpha, or None when it is undefined (fewer than two pairable values, or no variation)."""
    co = coincidences(data, level)
    if co.n < 2:
        return None
    d_e = co.expected_disagreement()
    if d_e == 0:
        return None
    d_o = float((co.o * co.delta2).sum() / co.n)
    return 1.0 - d_o / d_e


def coder_alpha(data: Data, coder: Hashable, level: str = "nominal") -> tuple[float | None, int]:
    """(alpha of this coder against the others, number of units they share with someone)."""
    co = coincidences(data, level)
    if co.n < 2:
        return None, 0
    d_e = co.expected_disagreement()
    index = {v: i for i, v in enumerate(co.values)}
    weight = disagreement = 0.0
    shared = 0
    for codes in _pairable(data).values():
        mine = codes.get(coder)
        if mine is None:
            continue
        others = [v for c, v in codes.items() if c != coder and v is not None]
        if not others:
            continue
        shared += 1
        w = 1.0 / (len(others))  # m_u - 1
        for v in others:
            weight += w
            disagreement += w * co.delta2[index[mine], index[v]]
    if weight == 0 or d_e == 0:
        return None, shared
    return float(1.0 - (disagreement / weight) / d_e), shared
