"""Hand-computed cases: a ranking, a pairwise and a thumbs project, labelled through the real submit service.

The world (shorter answers are "better" for the honest annotators):

* ranking project, k=4, one vote per item, 2 items, candidates "a" < "bb" < "ccc" < "dddd":
  every vote gives C(4,2) = 6 pairs (margins = rank gaps 1,1,1,2,2,3); best-versus-rest gives 3.
* pairwise project, three votes per item, 2 items:
  item P1: u1 picks the shorter "clear" (margin 2), u2 the shorter "slight" (margin 1), u3 the longer
  (no strength, margin unknown) → 3 votes, majority shorter 2:1, agreement 2/3, majority margin 1.5.
  item P2: u1 shorter, u2 tie, u3 longer → 2 non-tie votes + 1 tie; majority: a three-way draw → tie.
* thumbs project, one response per item, two votes per item, 3 items: up/up, up/down, down/down
  → 6 labels (3 up, 3 down); majority: up, (draw: dropped), down → 2 labels.
"""

from __future__ import annotations

import json

import pytest

from feedback.exports.services import snapshot_create, snapshot_preview, snapshot_write
from feedback.services.projects import membership_set

from .conftest import annotate_project, shorter_first

pytestmark = pytest.mark.django_db

TEXTS4 = ["dddd", "a", "ccc", "bb"]


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def world(project_factory, user_factory, make_item, settings, tmp_path):
    settings.EXPORTS_DIR = tmp_path / "exports"
    u1, u2, u3 = user_factory("u1"), user_factory("u2"), user_factory("u3")
    ranking = project_factory(name="Rank", task_kind="ranking", responses_per_item=4)
    pairwise = project_factory(name="Pair", task_kind="pairwise", annotations_required=3)
    thumbs = project_factory(name="Thumbs", task_kind="binary", responses_per_item=1, annotations_required=2)
    for p in (ranking, pairwise, thumbs):
        for u in (u1, u2, u3):
            membership_set(project=p, user=u, role="annotator")
    r_items = [make_item(ranking, texts=TEXTS4) for _ in range(2)]
    p1 = make_item(pairwise, texts=["long answer", "short"])
    p2 = make_item(pairwise, texts=["x", "yyyyyy"])
    t_items = [make_item(thumbs, texts=[f"thumb answer {i}"]) for i in range(3)]

    annotate_project(ranking, [u1], lambda u, item, shown: {"ranking": shorter_first(shown)})

    def pair_choice(user, item, shown):
        a, b = shown
        shorter = "A" if len(a.text) < len(b.text) else "B"
        longer = "B" if shorter == "A" else "A"
        if item.pk == p1.pk:
            return {
                "u1": {"choice": shorter, "strength": "clear"},
                "u2": {"choice": shorter, "strength": "slight"},
                "u3": {"choice": longer},
            }[user.username]
        return {"u1": {"choice": shorter}, "u2": {"choice": "tie"}, "u3": {"choice": longer}}[user.username]

    annotate_project(
        pairwise,
        [u1, u2, u3],
        pair_choice,
        demonstration=lambda u, item, shown: (
            "A demonstration." if (u.username, item.pk) == ("u1", p1.pk) else ""
        ),
    )
    votes = {t_items[0].pk: ("up", "up"), t_items[1].pk: ("up", "down"), t_items[2].pk: ("down", "down")}

    def thumb(user, item, shown):
        return {"labels": {str(shown[0].id): votes[item.pk][0 if user.username == "u1" else 1]}}

    annotate_project(thumbs, [u1, u2], thumb)
    return {
        "users": (u1, u2, u3),
        "ranking": ranking,
        "pairwise": pairwise,
        "thumbs": thumbs,
        "items": (r_items, p1, p2, t_items),
        "all_ids": [ranking.id, pairwise.id, thumbs.id],
    }


def counts(spec, **kw):
    preview = snapshot_preview(spec=spec, test_fraction=kw.pop("test_fraction", 0.0), **kw)
    return preview.row_counts["train"] + preview.row_counts["test"], preview


def test_every_vote_gives_all_pairs(world):
    n, preview = counts({"kind": "preference", "project_ids": world["all_ids"]})
    # ranking 2 x 6 + pairwise P1 3 + P2 2 (the tie dropped)
    assert n == 12 + 3 + 2
    assert preview.stats["dropped"] == {"tie": 1}
    assert preview.columns == ["prompt", "chosen", "rejected", "margin"]


def test_ranking_best_versus_rest(world):
    n, _ = counts(
        {"kind": "preference", "project_ids": [world["ranking"].id], "ranking_pairs": "best_vs_rest"}
    )
    assert n == 2 * 3
    n, preview = counts(
        {"kind": "preference", "project_ids": world["all_ids"], "ranking_pairs": "best_vs_rest"}
    )
    assert n == 6 + 3 + 2  # pairwise votes are untouched by best-versus-rest
    assert preview.stats["dropped"]["not_best_vs_rest"] == 6


def test_ties_kept(world):
    n, preview = counts({"kind": "preference", "project_ids": [world["pairwise"].id], "ties": "keep"})
    assert n == 6
    assert "tie" in preview.columns


def test_majority_per_item(world):
    n, preview = counts({"kind": "preference", "project_ids": world["all_ids"], "aggregation": "majority"})
    # ranking: 12 pairs, one vote each; P1: one pair (2:1); P2: a draw -> tie -> dropped
    assert n == 12 + 1
    assert preview.stats["dropped"]["tie"] == 1
    n, _ = counts(
        {"kind": "preference", "project_ids": world["all_ids"], "aggregation": "majority", "ties": "keep"}
    )
    assert n == 12 + 2


def test_majority_row_content_and_margin(world, tmp_path):
    snap = snapshot_create(
        name="pair majority",
        spec={
            "kind": "preference",
            "project_ids": [world["pairwise"].id],
            "aggregation": "majority",
            "include_sources": True,
        },
        test_fraction=0.0,
    )
    result = snapshot_write(snapshot=snap, formats=("jsonl",))
    rows = read_jsonl(result.path / "train.jsonl")
    assert len(rows) == 1
    row = rows[0]
    assert row["chosen"] == [{"role": "assistant", "content": "short"}]
    assert row["rejected"] == [{"role": "assistant", "content": "long answer"}]
    assert row["margin"] == 1.5  # mean of the winning votes' margins: clear (2) and slight (1)
    assert row["votes"] == 2
    assert row["agreement"] == pytest.approx(2 / 3, abs=1e-6)
    assert row["prompt"][0]["role"] == "user"


def test_ranking_margins_are_rank_gaps(world):
    snap = snapshot_create(
        name="ranking", spec={"kind": "preference", "project_ids": [world["ranking"].id]}, test_fraction=0.0
    )
    rows = read_jsonl(snapshot_write(snapshot=snap, formats=("jsonl",)).path / "train.jsonl")
    by_pair = {(r["chosen"][0]["content"], r["rejected"][0]["content"]): r["margin"] for r in rows}
    assert by_pair[("a", "dddd")] == 3.0
    assert by_pair[("a", "bb")] == 1.0
    assert by_pair[("bb", "dddd")] == 2.0
    assert sorted(by_pair.values()) == [1.0, 1.0, 1.0, 2.0, 2.0, 3.0]


def test_minimum_agreement_and_votes(world):
    spec = {"kind": "preference", "project_ids": [world["pairwise"].id]}
    n, preview = counts({**spec, "min_agreement": 0.5})
    assert n == 3  # P1 (2/3) kept, P2 (1/3: shorter, tie, longer) dropped with its 2 non-tie votes + tie
    assert preview.stats["dropped"]["low_agreement"] == 3
    assert preview.stats["items_with_2_or_more_votes"] == 2
    assert preview.stats["mean_agreement"] == pytest.approx((2 / 3 + 1 / 3) / 2, abs=1e-6)
    n, _ = counts({"kind": "preference", "project_ids": world["all_ids"], "min_votes": 2})
    assert n == 5  # the ranking items have one vote each


def test_flagged_annotators_left_out_by_default(world):
    from feedback.models import Membership

    Membership.objects.filter(project=world["pairwise"], user=world["users"][2]).update(flagged=True)
    spec = {"kind": "preference", "project_ids": [world["pairwise"].id]}
    n, _ = counts(spec)
    assert n == 2 + 1  # u3's two votes gone: P1 u1,u2; P2 u1 (u2's tie dropped)
    n, _ = counts({**spec, "include_flagged_annotators": True})
    assert n == 5


def test_unpaired_labels(world):
    spec = {"kind": "unpaired", "project_ids": [world["thumbs"].id]}
    snap = snapshot_create(name="kto", spec=spec, test_fraction=0.0)
    rows = read_jsonl(snapshot_write(snapshot=snap, formats=("jsonl",)).path / "train.jsonl")
    assert len(rows) == 6
    assert sum(r["label"] for r in rows) == 3
    assert all(r["completion"][0]["role"] == "assistant" for r in rows)
    n, preview = counts({**spec, "aggregation": "majority"})
    assert n == 2
    assert preview.stats["dropped"]["tie"] == 1
    # a preference export of thumbs-only data is empty, and an unpaired one of ranking data too
    assert counts({"kind": "preference", "project_ids": [world["thumbs"].id]})[0] == 0
    assert counts({"kind": "unpaired", "project_ids": [world["ranking"].id]})[0] == 0


def test_task_kind_filter(world):
    n, _ = counts({"kind": "preference", "project_ids": world["all_ids"], "task_kinds": ["pairwise"]})
    assert n == 5
    n, _ = counts({"kind": "preference", "project_ids": world["all_ids"], "task_kinds": ["ranking"]})
    assert n == 12


def test_sft_from_demonstrations(world):
    snap = snapshot_create(
        name="sft", spec={"kind": "sft", "project_ids": world["all_ids"]}, test_fraction=0.0
    )
    rows = read_jsonl(snapshot_write(snapshot=snap, formats=("jsonl",)).path / "train.jsonl")
    assert rows == [
        {
            "prompt": rows[0]["prompt"],
            "completion": [{"role": "assistant", "content": "A demonstration."}],
        }
    ]


def test_raw_annotations_are_pseudonymised(world):
    snap = snapshot_create(
        name="raw", spec={"kind": "raw", "project_ids": world["all_ids"]}, test_fraction=0.0
    )
    result = snapshot_write(snapshot=snap, formats=("jsonl", "parquet"))
    rows = read_jsonl(result.path / "train.jsonl")
    assert len(rows) == 2 + 6 + 6  # ranking 2, pairwise 2 items x 3, thumbs 3 items x 2
    names = {r["annotator"] for r in rows}
    assert len(names) == 3
    text = (result.path / "train.jsonl").read_text()
    for user in world["users"]:
        assert f'"{user.username}"' not in text
    ranking_row = next(r for r in rows if r["kind"] == "ranking")
    assert [c["text"] for c in ranking_row["candidates"]] != []
    shown = ranking_row["candidates"]
    assert json.loads(ranking_row["payload"])["ranking"][0] == [
        next(c["id"] for c in shown if c["text"] == "a")
    ]
    # a different snapshot gives the same annotator a different pseudonym
    snap2 = snapshot_create(
        name="raw2", spec={"kind": "raw", "project_ids": world["all_ids"]}, test_fraction=0.0
    )
    rows2 = read_jsonl(snapshot_write(snapshot=snap2, formats=("jsonl",)).path / "train.jsonl")
    assert {r["annotator"] for r in rows2}.isdisjoint(names)
