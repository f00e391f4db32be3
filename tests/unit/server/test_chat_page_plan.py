"""The chat page's plan drawing, run in headless Chromium on the packaged page: progress lines
as the server writes them go in, and every node must come out labelled with its text, apart
from every other node, inside the plan panel's scroll area, at any depth or width of plan, on
a desktop window and on a 375 px phone."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from .cdp import CHROMIUM, Page, packaged_page

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium")


LABELS = {
    'llm("What is \\"x\\" worth?")': ("llm", 'What is "x" worth?'),
    'search("Oxford founded")': ("search", "Oxford founded"),
    'llm("Which is older?", [$n1, $n2])': ("llm", "Which is older?"),
    'python("import math\\nprint(math.pi)")': ("python", "import math\nprint(math.pi)"),
    "llm($n1)": ("llm", "uses $n1"),
    'fetch("https://e.org/a(b)")': ("fetch", "https://e.org/a(b)"),
    'llm("a question the label cut off': ("llm", "a question the label cut off…"),
    "no call at all": ("", "no call at all"),
}

DRAW = """(lines) => {
  nodes = new Map();
  for (const line of lines) readProgress(line);
  const port = document.getElementById('viewport'), p = port.getBoundingClientRect();
  return [...document.querySelectorAll('#nodes .node')].map((n) => {
    const r = n.getBoundingClientRect();
    const x = r.left - p.left + port.scrollLeft - port.clientLeft;
    const y = r.top - p.top + port.scrollTop - port.clientTop;
    return { id: n.dataset.id, label: n.querySelector('.label').textContent, title: n.title,
             left: x, top: y, right: x + r.width, bottom: y + r.height,
             width: port.scrollWidth, height: port.scrollHeight };
  });
}"""


def _plan_lines(deps: dict[str, list[str]]) -> list[str]:
    """The server's progress lines for a plan: each node planned, its question in its label."""
    lines = []
    for node, after in deps.items():
        label = json.dumps(f"What does step {node} find out about the question?")
        tail = f" (after {', '.join(after)})" if after else ""
        lines.append(f"- planned {node}: llm({label}){tail}")
    return lines


def _random_plan(chooser: random.Random, size: int) -> dict[str, list[str]]:
    deps: dict[str, list[str]] = {}
    for k in range(1, size + 1):
        earlier = list(deps)
        count = chooser.randint(0, min(3, len(earlier)))
        deps[f"n{k}"] = chooser.sample(earlier, count)
    return deps


PLANS: dict[str, dict[str, list[str]]] = {
    "a chain of 24": {f"n{k}": [f"n{k - 1}"] if k > 1 else [] for k in range(1, 25)},
    "24 side by side, then one": {f"n{k}": [] for k in range(1, 25)}
    | {"join": [f"n{k}" for k in range(1, 25)]},
    **{f"random {k}": _random_plan(random.Random(k), 16) for k in range(6)},
}


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Page]:
    async with packaged_page(tmp_path / "profile", "typeof readProgress === 'function'") as page:
        yield page


async def test_a_label_shows_what_the_node_asks(page: Page) -> None:
    for label, (tool, text) in LABELS.items():
        assert await page.evaluate(f"describe({json.dumps(label)})") == {
            "tool": tool,
            "text": text,
        }, label


@pytest.mark.parametrize("width, height", [(1200, 800), (375, 740)])
async def test_every_node_of_any_plan_is_drawn_apart_and_within_reach(
    page: Page, width: int, height: int
) -> None:
    await page.resize(width, height, mobile=width < 640)
    for name, deps in PLANS.items():
        boxes = await page.evaluate(f"({DRAW})({json.dumps(_plan_lines(deps))})")
        _assert_drawn(name, deps, boxes)
        assert await page.evaluate("document.documentElement.scrollWidth") <= width, name


def _assert_drawn(name: str, deps: dict[str, list[str]], boxes: list[dict[str, Any]]) -> None:
    assert [b["id"] for b in boxes] == list(deps), name
    for box in boxes:
        assert box["left"] >= -1 and box["top"] >= -1, (name, box)
        assert box["right"] <= box["width"] + 1 and box["bottom"] <= box["height"] + 1, (name, box)
        assert f"step {box['id']} find" in box["label"] and box["id"] in box["title"], (name, box)
    ordered = sorted(boxes, key=lambda b: (b["left"], b["top"]))
    for k, one in enumerate(ordered):
        for other in ordered[k + 1 :]:
            apart = one["right"] <= other["left"] or other["right"] <= one["left"]
            apart |= one["bottom"] <= other["top"] or other["bottom"] <= one["top"]
            assert apart, (name, "overlap", one, other)
