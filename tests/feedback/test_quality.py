"""Quality: Krippendorff's alpha against the published example, gold answers and accuracy, flagging, position
bias, and the leaderboard (Bradley-Terry + bootstrap, Elo)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from feedback.errors import InvalidInput
from feedback.models import Item, Membership
from feedback.quality.agreement import alpha, coder_alpha
from feedback.quality.leaderboard import Outcome, bt_fit, leaderboard
from feedback.quality.plots import leaderboard_svg
from feedback.quality.selectors import gold_score, project_leaderboard, project_quality
from feedback.quality.services import annotators_flag, item_gold_set
from feedback.services.distribution import annotation_submit, item_next
from feedback.services.projects import membership_set

# Krippendorff (2011), "Computing Krippendorff's alpha-reliability", section C: 4 coders, 12 units.
KRIPPENDORFF_2011 = {
    "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    "C": [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
}


def _units(rows):
    return {u: {c: rows[c][u] for c in rows} for u in range(len(next(iter(rows.values()))))}


@pytest.mark.parametrize(("level", "expected"), [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)])
def test_alpha_matches_published_example(level, expected):
    assert alpha(_units(KRIPPENDORFF_2011), level) == pytest.approx(expected, abs=5e-4)


def test_alpha_edge_cases():
    assert alpha({1: {"a": "x", "b": "x"}, 2: {"a": "y", "b": "y"}}) == pytest.approx(1.0)
    assert alpha({1: {"a": "x", "b": "x"}}) is None  # no variation: undefined
    assert alpha({1: {"a": "x"}, 2: {"b": "y"}}) is None  # nothing pairable
    # systematic disagreement is below zero
    assert alpha({1: {"a": "x", "b": "y"}, 2: {"a": "y", "b": "x"}}) < 0


def test_coder_alpha_singles_out_the_contrarian():
    rng = np.random.default_rng(0)
    data = {}
    for u in range(60):
        truth = int(rng.integers(0, 3))
        data[u] = {"good1": truth, "good2": truth, "good3": truth, "bad": int(rng.integers(0, 3))}
    scores = {c: coder_alpha(data, c, "nominal")[0] for c in ("good1", "good2", "good3", "bad")}
    # a good coder agrees with two others and with the contrarian only by chance: about 0.7
    assert scores["bad"] < 0.2 < 0.6 < min(scores["good1"], scores["good2"], scores["good3"])
    assert coder_alpha(data, "bad", "nominal")[1] == 60


def test_gold_scores():
    assert gold_score("pairwise", {"choice": "B", "chosen": 7}, {"choice": "chosen", "chosen": 7}) == 1.0
    assert gold_score("pairwise", {"choice": "tie", "chosen": None}, {"choice": "chosen", "chosen": 7}) == 0.0
    assert (
        gold_score("binary", {"labels": {"1": "up", "2": "down"}}, {"labels": {"1": "up", "2": "up"}}) == 0.5
    )
    gold = {"ranking": [[1], [2], [3]]}
    assert gold_score("ranking", {"ranking": [[1], [2], [3]]}, gold) == 1.0
    assert gold_score("ranking", {"ranking": [[3], [2], [1]]}, gold) == 0.0
    assert gold_score("ranking", {"ranking": [[1], [3], [2]]}, gold) == pytest.approx(2 / 3)


@pytest.mark.django_db
def test_gold_items_accuracy_and_flagging(project_factory, user_factory, make_item):
    project = project_factory(gold_rate=0.0, annotations_required=1, min_agreement=0.6)
    users = [user_factory() for _ in range(3)]
    for u in users:
        membership_set(project=project, user=u, role="annotator")
    golds = []
    for _ in range(4):
        item = make_item(project)
        right = item.slots.order_by("position").first().candidate_id
        golds.append((item_gold_set(item=item, gold_payload={"chosen": right}), right))
    with pytest.raises(InvalidInput):
        item_gold_set(item=make_item(project), gold_payload={"chosen": 999999})
    assert all(g.is_gold and g.annotations_required == 3 for g, _ in golds)  # every member meets each
    project.gold_rate = 1.0
    project.save()
    good, bad, idle = users
    for user, correct in ((good, True), (bad, False)):
        for _ in range(4):
            lease = item_next(project=project, user=user)
            assert lease.item.is_gold
            right = dict(golds_by_id(golds))[lease.item_id]
            wrong = next(c for c in lease.order_shown if c != right)
            pick = right if correct else wrong
            choice = "A" if lease.order_shown[0] == pick else "B"
            annotation_submit(
                user=user,
                item_id=lease.item_id,
                payload={"choice": choice},
                idempotency_key=f"g{lease.item_id}",
            )
    quality = {p.username: p for p in project_quality(project=project).annotators}
    assert quality[good.username].gold_accuracy == 1.0 and quality[good.username].gold_answered == 4
    assert quality[bad.username].gold_accuracy == 0.0
    changes = annotators_flag(project=project)
    assert [(c.username, c.flagged) for c in changes] == [(bad.username, True)]
    assert "gold accuracy 0.00" in changes[0].reason
    flags = dict(Membership.objects.filter(project=project).values_list("user__username", "flagged"))
    assert flags == {good.username: False, bad.username: True, idle.username: False}  # idle: no evidence
    assert annotators_flag(project=project) == []  # stable


def golds_by_id(golds):
    return [(g.pk, right) for g, right in golds]


@pytest.mark.django_db
def test_project_agreement_per_kind_and_position_bias(project_factory, user_factory, make_item):
    project = project_factory(task_kind="ranking", responses_per_item=3, annotations_required=3)
    for _ in range(6):
        make_item(project)
    users = [user_factory() for _ in range(3)]
    for user in users:
        while (lease := item_next(project=project, user=user)) is not None:
            ids = sorted(lease.order_shown)  # everyone ranks by id: perfect agreement
            annotation_submit(
                user=user, item_id=lease.item_id, payload={"ranking": ids}, idempotency_key=str(lease.item_id)
            )
    q = project_quality(project=project)
    assert q.level == "ordinal" and q.alpha == pytest.approx(1.0) and q.units == 18
    assert all(p.alpha == pytest.approx(1.0) and p.shared_units == 18 for p in q.annotators)
    bias = q.position_bias
    assert bias["expected"] == pytest.approx(1 / 3) and bias["decisive"] == 18
    assert 0 <= bias["first_rate"] <= 1 and 0 <= bias["p_value"] <= 1


@pytest.mark.django_db
def test_position_bias_detects_always_a(project_factory, user_factory, make_item):
    project = project_factory(annotations_required=1)
    for _ in range(12):
        make_item(project)
    user = user_factory()
    while (lease := item_next(project=project, user=user)) is not None:
        annotation_submit(
            user=user, item_id=lease.item_id, payload={"choice": "A"}, idempotency_key=str(lease.pk)
        )
    bias = project_quality(project=project).position_bias
    assert bias["first_rate"] == 1.0 and bias["decisive"] == 12 and bias["p_value"] < 0.001


def _simulate(strengths, n, seed=0, tie_rate=0.0):
    rng = np.random.default_rng(seed)
    names = list(strengths)
    out = []
    for g in range(n):
        i, j = rng.choice(len(names), 2, replace=False)
        a, b = names[i], names[j]
        if rng.random() < tie_rate:
            out.append(Outcome(g, a, b, tie=True))
            continue
        p = 1 / (1 + math.exp(-(strengths[a] - strengths[b])))
        out.append(Outcome(g, a, b) if rng.random() < p else Outcome(g, b, a))
    return out


def test_bradley_terry_recovers_strengths_with_intervals():
    strengths = {"strong": 1.0, "mid": 0.0, "weak": -1.0}
    board = leaderboard(_simulate(strengths, 1500, tie_rate=0.1), bootstrap=100)
    assert [s.player for s in board] == ["strong", "mid", "weak"]
    scale = 400 / math.log(10)
    gap = board[0].rating - board[2].rating
    assert gap == pytest.approx(2 * scale, rel=0.2)
    for s in board:
        assert s.ci_low < s.rating < s.ci_high
        assert s.ci_high - s.ci_low < 120
    assert board[0].elo > board[1].elo > board[2].elo
    assert sum(s.comparisons for s in board) == 2 * 1500


def test_bradley_terry_mle_matches_closed_form_for_two_players():
    wins = np.array([[30.0, 0.0], [10.0, 0.0]])  # a beat b 30 times, lost 10
    wins[0, 1], wins[1, 0] = 30.0, 10.0
    s = bt_fit(wins, ridge=0.0)
    assert s[0] - s[1] == pytest.approx(math.log(3), abs=1e-4)


def test_undefeated_version_stays_finite():
    board = leaderboard([Outcome(g, "a", "b") for g in range(20)], bootstrap=20)
    assert all(math.isfinite(s.rating) and math.isfinite(s.ci_high) for s in board)
    assert board[0].player == "a" and board[0].win_rate == 1.0


@pytest.mark.django_db
def test_project_leaderboard_uses_cross_version_pairs_and_skips_flagged(
    project_factory, user_factory, make_item
):
    from inference.models import Engine, ModelVersion

    old = ModelVersion.objects.create(name="old", engine=Engine.EXTERNAL)
    new = ModelVersion.objects.create(name="new", engine=Engine.EXTERNAL)
    project = project_factory(annotations_required=2)
    same = make_item(project, version=old)  # both candidates by "old": tells nothing about versions
    mixed = []
    for _ in range(3):
        item = make_item(project, version=old)
        c = item.slots.order_by("position").last().candidate
        c.model_version = new
        c.save()
        mixed.append(item)
    fan, troll = user_factory(), user_factory()
    for user in (fan, troll):
        membership_set(project=project, user=user, role="annotator")
        while (lease := item_next(project=project, user=user)) is not None:
            versions = dict(
                Item.objects.get(pk=lease.item_id).candidates.values_list("id", "model_version__name")
            )
            want = "new" if user == fan else "old"
            pick = next((c for c in lease.order_shown if versions[c] == want), lease.order_shown[0])
            choice = "A" if lease.order_shown[0] == pick else "B"
            annotation_submit(
                user=user, item_id=lease.item_id, payload={"choice": choice}, idempotency_key=str(lease.pk)
            )
    assert Item.objects.get(pk=same.pk).annotations_count == 2
    both = project_leaderboard(project=project, bootstrap=0)
    assert {s.player: s.comparisons for s in both} == {"new": 6, "old": 6}  # 'same' item left out
    Membership.objects.filter(project=project, user=troll).update(flagged=True)
    board = project_leaderboard(project=project, bootstrap=0)
    assert [s.player for s in board] == ["new", "old"] and board[0].wins == 3 and board[0].ci_low is None
    assert project_leaderboard(project=project, bootstrap=0, include_flagged=True)[0].comparisons == 6


def test_svg_escapes_and_is_self_contained():
    board = leaderboard(
        [Outcome(1, "<script>alert(1)</script>", "b & c"), Outcome(2, "b & c", "x")], bootstrap=5
    )
    svg = leaderboard_svg(board, title='Title "quoted"')
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "b &amp; c" in svg
    assert "http" not in svg.replace("http://www.w3.org/2000/svg", "")
    assert leaderboard_svg([], title="empty").count("No comparisons") == 1
