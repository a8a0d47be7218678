"""Incident and maintenance bodies: Markdown, stored as written and rendered safely.

Raw HTML in a body is never passed through (markdown-it's `html` option is off, so it comes out
escaped), and links with script schemes are refused by markdown-it's link validation. What
`render_body` returns is safe to put into a page unescaped.
"""

from __future__ import annotations

from markdown_it import MarkdownIt
from markupsafe import Markup

_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})


def render_body(markdown: str) -> Markup:
    """`markdown` as HTML safe to embed: Markdown's formatting, every tag in it escaped."""
    return Markup(_markdown.render(markdown))  # noqa: S704 (html is off: the output is escaped)
