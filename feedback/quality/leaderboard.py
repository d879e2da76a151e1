"""Model-version leaderboard from pairwise outcomes: Bradley-Terry (maximum likelihood) with bootstrap
confidence intervals, and Elo.

An outcome is ``(group, winner, loser, tie)``: ``group`` is the annotation it came from (the bootstrap
resamples annotations, not pairs, because the pairs of one ranking are not independent); a tie counts half a
win to each side.

Bradley-Terry: P(i beats j) = sigmoid(s_i - s_j). The scores maximise the log-likelihood with a weak Gaussian
prior (``ridge``, default 1e-3 per unit of s²) that keeps an undefeated version finite and fixes the scale's
origin; ratings are reported on the Elo scale, ``1000 + 400 / ln(10) * s`` with mean s = 0, so 400 points mean
10:1 odds.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

ELO_SCALE = 400.0 / math.log(10.0)
BASE = 1000.0


@dataclass(frozen=True, slots=True)
class Outcome:
    group: Hashable
    winner: Hashable
    loser: Hashable
    tie: bool = False


@dataclass(frozen=True, slots=True)
class Standing:
    player: Hashable
    rating: float
    ci_low: float | None
    ci_high: float | None
    elo: float
    wins: float
    losses: float
    comparisons: int

    @property
    def win_rate(self) -> float | None:
        total = self.wins + self.losses
        return self.wins / total if total else None


def _win_matrix(idx_w: np.ndarray, idx_l: np.ndarray, weight: np.ndarray, n: int) -> np.ndarray:
    w = np.zeros((n, n))
    np.add.at(w, (idx_w, idx_l), weight)
    return w


def bt_fit(wins: np.ndarray, *, ridge: float = 1e-3, start: np.ndarray | None = None) -> np.ndarray:
    """Scores s (mean 0) maximising sum_ij W_ij log sigmoid(s_i - s_j) - ridge/2 |s|²."""
    n = wins.shape[0]
    games = wins + wins.T

    def objective(s: np.ndarray) -> tuple[float, np.ndarray]:
        diff = s[:, None] - s[None, :]
        # -log sigmoid(d) = log(1 + e^-d), computed stably
        nll = float((wins * np.logaddexp(0.0, -diff)).sum()) + 0.5 * ridge * float(s @ s)
        p = 1.0 / (1.0 + np.exp(-diff))  # P(i beats j)
        grad = -(wins.sum(axis=1) - (games * p).sum(axis=1)) + ridge * s
        return nll, grad

    x0 = np.zeros(n) if start is None else start
    result = minimize(objective, x0, jac=True, method="L-BFGS-B", options={"maxiter": 500, "gtol": 1e-9})
    s = result.x
    return s - s.mean()


def elo(
    outcomes: Sequence[Outcome], players: Sequence[Hashable], *, k: float = 16.0
) -> dict[Hashable, float]:
    """Sequential Elo in the given order (each outcome updates both players)."""
    rating = {p: BASE for p in players}
    for o in outcomes:
        rw, rl = rating[o.winner], rating[o.loser]
        expected_w = 1.0 / (1.0 + 10 ** ((rl - rw) / 400.0))
        score = 0.5 if o.tie else 1.0
        rating[o.winner] = rw + k * (score - expected_w)
        rating[o.loser] = rl + k * ((1.0 - score) - (1.0 - expected_w))
    return rating


def leaderboard(
    outcomes: Sequence[Outcome],
    *,
    bootstrap: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
    ridge: float = 1e-3,
    elo_k: float = 16.0,
) -> list[Standing]:
    """Standings, best first. CIs are bootstrap percentiles over annotations (None when bootstrap=0)."""
    players = sorted({o.winner for o in outcomes} | {o.loser for o in outcomes}, key=str)
    if not players:
        return []
    pi = {p: i for i, p in enumerate(players)}
    groups = sorted({o.group for o in outcomes}, key=str)
    gi = {g: i for i, g in enumerate(groups)}
    # a tie becomes half a win each way
    rows_w, rows_l, rows_g, rows_x = [], [], [], []
    for o in outcomes:
        half = 0.5 if o.tie else 1.0
        rows_w.append(pi[o.winner])
        rows_l.append(pi[o.loser])
        rows_g.append(gi[o.group])
        rows_x.append(half)
        if o.tie:
            rows_w.append(pi[o.loser])
            rows_l.append(pi[o.winner])
            rows_g.append(gi[o.group])
            rows_x.append(half)
    w_idx, l_idx = np.array(rows_w), np.array(rows_l)
    g_idx, x = np.array(rows_g), np.array(rows_x, dtype=float)
    n = len(players)
    wins = _win_matrix(w_idx, l_idx, x, n)
    s = bt_fit(wins, ridge=ridge)
    low = high = None
    if bootstrap > 0 and len(groups) > 1:
        rng = np.random.default_rng(seed)
        samples = np.empty((bootstrap, n))
        for b in range(bootstrap):
            counts = rng.multinomial(len(groups), np.full(len(groups), 1.0 / len(groups)))
            wb = _win_matrix(w_idx, l_idx, x * counts[g_idx], n)
            samples[b] = bt_fit(wb, ridge=ridge, start=s)
        tail = (1.0 - confidence) / 2.0 * 100.0
        low = BASE + ELO_SCALE * np.percentile(samples, tail, axis=0)
        high = BASE + ELO_SCALE * np.percentile(samples, 100.0 - tail, axis=0)
    elo_rating = elo(outcomes, players, k=elo_k)
    games = wins + wins.T
    standings = [
        Standing(
            player=p,
            rating=float(BASE + ELO_SCALE * s[i]),
            ci_low=None if low is None else float(low[i]),
            ci_high=None if high is None else float(high[i]),
            elo=float(elo_rating[p]),
            wins=float(wins[i].sum()),
            losses=float(wins[:, i].sum()),
            comparisons=round(games[i].sum()),
        )
        for i, p in enumerate(players)
    ]
    return sorted(standings, key=lambda st: -st.rating)
