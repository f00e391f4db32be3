"""The chat page's markdown renderer, run in headless Chromium on the packaged page itself:
what it builds for each construct, and that model text never becomes markup it did not mean
(no element, attribute or link scheme beyond a short list, whatever the text)."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from .cdp import CHROMIUM, Page, packaged_page

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium")


RENDERED = {
    "# Title\n\ntext": "<h1>Title</h1><p>text</p>",
    "**bold**, *em*, _em_, ~~gone~~ and `a < b`": (
        "<p><strong>bold</strong>, <em>em</em>, <em>em</em>, <del>gone</del> and "
        "<code>a &lt; b</code></p>"
    ),
    "one\ntwo\n\nthree": "<p>one<br>two</p><p>three</p>",
    "- a\n- b\n  - c": "<ul><li>a</li><li>b<ul><li>c</li></ul></li></ul>",
    "3. three\n4. four": '<ol start="3"><li>three</li><li>four</li></ol>',
    "```py\nx < 1\n\ny\n```\nafter": (
        '<pre><code data-lang="py">x &lt; 1\n\ny</code></pre><p>after</p>'
    ),
    "```\nstill streaming": "<pre><code>still streaming</code></pre>",
    "| a | b |\n|---|:-:|\n| 1 | 2 |": (
        "<table><thead><tr><th>a</th><th>b</th></tr></thead>"
        "<tbody><tr><td>1</td><td>2</td></tr></tbody></table>"
    ),
    "> quoted **bold**": "<blockquote><p>quoted <strong>bold</strong></p></blockquote>",
    "---": "<hr>",
    "see [the *docs*](https://e.org/a_b) or https://e.org/x.": (
        '<p>see <a href="https://e.org/a_b" target="_blank" rel="noopener noreferrer">the '
        '<em>docs</em></a> or <a href="https://e.org/x" target="_blank" '
        'rel="noopener noreferrer">https://e.org/x</a>.</p>'
    ),
    "snake_case_name and 2 * 3 * 4": "<p>snake_case_name and 2 * 3 * 4</p>",
}

HOSTILE = {
    "<img src=x onerror=alert(1)>": "<p>&lt;img src=x onerror=alert(1)&gt;</p>",
    "<script>alert(1)</script>": "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>",
    "[x](javascript:alert(1))": "<p>[x](javascript:alert(1))</p>",
    "[x](JaVaScRiPt:alert`1`)": "<p>[x](JaVaScRiPt:alert`1`)</p>",
    "[x](data:text/html;base64,PHNjcmlwdD4=)": "<p>[x](data:text/html;base64,PHNjcmlwdD4=)</p>",
    '[x](https://e.org/" onmouseover="alert(1))': (  # the quote ends the URL, as text
        '<p>[x](<a href="https://e.org/" target="_blank" rel="noopener noreferrer">'
        'https://e.org/</a>" onmouseover="alert(1))</p>'
    ),
    "`<b onclick=x>`": "<p><code>&lt;b onclick=x&gt;</code></p>",
    "**<iframe src=//e.org>**": "<p><strong>&lt;iframe src=//e.org&gt;</strong></p>",
    "```\n</code></pre><script>x</script>\n```": (
        "<pre><code>&lt;/code&gt;&lt;/pre&gt;&lt;script&gt;x&lt;/script&gt;</code></pre>"
    ),
}

SAFE = """(texts) => {
  const tags = new Set(["P", "BR", "H1", "H2", "H3", "H4", "H5", "H6", "HR", "BLOCKQUOTE", "UL",
    "OL", "LI", "PRE", "CODE", "TABLE", "THEAD", "TBODY", "TR", "TH", "TD", "STRONG", "EM",
    "DEL", "A"]);
  const attributes = new Set(["href", "target", "rel", "start", "data-lang"]);
  const problems = [];
  for (const text of texts) {
    const box = document.createElement("div");
    box.append(renderMarkdown(text));
    for (const element of box.querySelectorAll("*")) {
      if (!tags.has(element.tagName)) problems.push([text, element.tagName]);
      for (const { name } of element.attributes) {
        if (!attributes.has(name)) problems.push([text, name]);
      }
      if (element.tagName === "A" && !/^(https?:|mailto:)/.test(element.getAttribute("href"))) {
        problems.push([text, element.getAttribute("href")]);
      }
    }
  }
  return problems;
}"""


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Page]:
    async with packaged_page(tmp_path / "profile", "typeof renderMarkdown === 'function'") as page:
        yield page


async def _render(page: Page, text: str) -> str:
    expression = (
        "(() => { const box = document.createElement('div');"
        f" box.append(renderMarkdown({json.dumps(text)})); return box.innerHTML; }})()"
    )
    html: str = await page.evaluate(expression)
    return html


async def test_markdown_constructs_render_as_elements(page: Page) -> None:
    for text, expected in RENDERED.items():
        assert await _render(page, text) == expected, text


async def test_hostile_text_stays_text(page: Page) -> None:
    for text, expected in HOSTILE.items():
        assert await _render(page, text) == expected, text


async def test_no_text_makes_markup_beyond_the_short_list(page: Page) -> None:
    """Random text from markdown's and HTML's special characters: whatever comes out uses only
    the listed elements and attributes, and links only http(s) and mailto."""
    pieces = ["<", ">", "[", "]", "(", ")", "*", "_", "`", "~", "|", "#", ">", "-", "1.", " ",
              "\n", "\n\n", '"', "'", "=", "javascript:", "https://e.org/", "onerror", "img",
              "script", "a", "&", "\\", "!", "```"]  # fmt: skip
    chooser = random.Random(22)
    texts = ["".join(chooser.choices(pieces, k=chooser.randint(1, 40))) for _ in range(2000)]
    problems = await page.evaluate(f"({SAFE})({json.dumps(texts)})")
    assert problems == []
