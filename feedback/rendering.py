"""Markdown to safe HTML, on the server.

Model outputs and guidelines are untrusted: raw HTML in the source is never passed through
(markdown-it runs with ``html=False``, so ``<script>`` arrives as text), and the HTML that
markdown-it makes is then cleaned by nh3 against a short allow-list: no scripts, event
handlers, iframes, forms, styles or images (an image would make the browser fetch from outside,
and annotators often work on closed networks). Links keep absolute http(s)/mailto targets only (a relative one would point into this app), get
``rel="noopener noreferrer nofollow"`` and open in a new tab (a click never loses the work on the page).
"""

from __future__ import annotations

import re
from functools import lru_cache

import nh3
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt

ALLOWED_TAGS = frozenset(
    {
        "p", "br", "hr", "blockquote", "pre", "code", "em", "strong", "s", "del",
        "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li",
        "table", "thead", "tbody", "tr", "th", "td", "a",
    }
)  # fmt: skip
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "ol": {"start"},
    "th": {"style"},
    "td": {"style"},
    "code": {"class"},
}
URL_SCHEMES = frozenset({"http", "https", "mailto"})
_LANGUAGE_CLASS = re.compile(r"language-[A-Za-z0-9_+#.-]{1,32}")
_TEXT_ALIGN = re.compile(r"text-align:(left|right|center)")


def _attribute_filter(tag: str, attribute: str, value: str) -> str | None:
    if attribute == "class":  # only a code block's language, e.g. "language-python"
        return value if _LANGUAGE_CLASS.fullmatch(value) else None
    if attribute == "style":  # only table column alignment
        return value if _TEXT_ALIGN.fullmatch(value.replace(" ", "")) else None
    if attribute == "start":
        return value if value.isdigit() and len(value) < 9 else None
    return value


_markdown = (
    MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False, "breaks": True})
    .enable(["table", "strikethrough"])
    .disable(["image"])
)


def _clean(html: str) -> str:
    return nh3.clean(
        html,
        tags=set(ALLOWED_TAGS),
        clean_content_tags={"script", "style"},
        attributes={tag: set(attrs) for tag, attrs in ALLOWED_ATTRIBUTES.items()},
        attribute_filter=_attribute_filter,
        url_schemes=set(URL_SCHEMES),
        url_relative="deny",  # a relative link would point into this app
        link_rel="noopener noreferrer nofollow",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        strip_comments=True,
    )


@lru_cache(maxsize=4096)
def _render(text: str) -> str:
    return _clean(_markdown.render(text))


def render_markdown(text: str | None) -> SafeString:
    """Render untrusted markdown as HTML that is safe to put in a page as it is."""
    if not text:
        return mark_safe("")
    return mark_safe(_render(text))  # cleaned by nh3 against the allow-list above
