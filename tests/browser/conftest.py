"""Browser tests: PyPI playwright driving Debian's chromium (/usr/bin/chromium), never a downloaded browser.

One browser per session, a fresh context per test; pytest-django's live_server with a transactional
database (the server thread and the test share the rows). Every test leaves a screenshot under
artifacts/screenshots/ (ignored by git).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    skip = pytest.mark.skip(
        reason=f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    )
    required = os.environ.get("ARBITER_REQUIRE_BROWSER") == "1"  # CI: a missing browser fails
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)
            if not CHROMIUM.exists():
                if required:
                    raise pytest.UsageError(f"ARBITER_REQUIRE_BROWSER=1 but {CHROMIUM} is missing")
                item.add_marker(skip)


@pytest.fixture(scope="module", autouse=True)
def _orm_beside_playwright() -> Iterator[None]:
    """Playwright's sync API keeps an event loop running in this thread while a browser is open, which
    Django's async-safety guard mistakes for async code; the ORM calls made between browser steps (and the
    database flush after each test) are plain synchronous calls. Only for these modules: the browser closes
    with its module, and the setting is put back, before other tests run."""
    before = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    yield
    if before is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = before


@pytest.fixture(scope="module")
def browser(_orm_beside_playwright: None) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS, headless=True)
        yield b
        b.close()


class PageWatch:
    """What the page did that it should not: dialogs opened, script errors, requests to other hosts."""

    def __init__(self) -> None:
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.outside_requests: list[str] = []
        self.unload_prompts = 0


def _screenshot_name(nodeid: str, suffix: str = "") -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid.split("::", 1)[-1]).strip("_")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS / f"{name}{suffix}.png"


@pytest.fixture
def watch() -> PageWatch:
    return PageWatch()


@pytest.fixture
def page(browser, live_server, watch: PageWatch, request: pytest.FixtureRequest) -> Iterator[Any]:
    viewport = getattr(request, "param", None) or {"width": 1200, "height": 900}
    context = browser.new_context(viewport=viewport, has_touch=True, base_url=live_server.url)
    context.set_default_timeout(5000)
    pg = context.new_page()

    def on_dialog(dialog: Any) -> None:
        if dialog.type == "beforeunload":  # the page's own "leave with unsaved text?" question
            watch.unload_prompts += 1
            dialog.accept()
            return
        watch.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def on_request(req: Any) -> None:
        if not req.url.startswith(live_server.url) and not req.url.startswith(("data:", "about:")):
            watch.outside_requests.append(req.url)

    pg.on("dialog", on_dialog)
    pg.on("pageerror", lambda exc: watch.errors.append(str(exc)))
    pg.on("request", on_request)
    yield pg
    try:
        pg.screenshot(path=str(_screenshot_name(request.node.nodeid, "-end")), full_page=True)
    finally:
        context.close()
    # Every asset comes from the app itself (annotators often work on closed networks).
    assert not watch.outside_requests, watch.outside_requests


@pytest.fixture
def shot(request: pytest.FixtureRequest):
    """shot(page, "label"): a full-page screenshot named after the test."""

    def take(pg: Any, label: str) -> Path:
        path = _screenshot_name(request.node.nodeid, f"-{label}")
        pg.screenshot(path=str(path), full_page=True)
        return path

    return take


@pytest.fixture
def annotator(transactional_db, user_factory):
    return user_factory("annie")


@pytest.fixture
def login(live_server):
    """Log in through the login form with the keyboard only, landing on `next`."""

    from playwright.sync_api import expect

    def do(pg: Any, user: Any, next_url: str) -> None:
        pg.goto(f"/accounts/login/?next={next_url}")
        expect(pg.locator("#id_username")).to_be_focused()
        pg.keyboard.type(user.username)  # the username field has autofocus
        pg.keyboard.press("Tab")
        pg.keyboard.type("pw-" + user.username)
        with pg.expect_navigation():
            pg.keyboard.press("Enter")
        assert pg.url.endswith(next_url), pg.url

    return do


@pytest.fixture
def session_login(live_server):
    """Start logged in (a session cookie made on the server side), for tests about what comes after login."""
    from django.test import Client

    def do(pg: Any, user: Any, next_url: str) -> None:
        client = Client()
        client.force_login(user)
        cookie = client.cookies["sessionid"]
        pg.context.add_cookies([{"name": "sessionid", "value": cookie.value, "url": live_server.url}])
        pg.goto(next_url)

    return do
