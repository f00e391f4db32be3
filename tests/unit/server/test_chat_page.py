"""The chat page at `/`: self-contained, and in a real headless browser it draws the plan."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote

import httpx2
import pytest

from agentflow.plan import LLM_KIND, TaskId, TaskNode
from agentflow.testing import StaticPlanner
from agentflow.tool import tool

from .conftest import config, serving

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DONE_FILL = (0xD4, 0xF5, 0xDC)
"""The fill of a finished node (`.node.done rect` in the page's style)."""


def test_the_page_is_served_and_fetches_nothing_from_elsewhere(base_url: str) -> None:
    response = httpx2.get(base_url.removesuffix("/v1") + "/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "<svg" in page and "v1/chat/completions" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert not re.search(r"""(@import|url\(\s*["']?https?:|fetch\(\s*["']https?:)""", page)


def _chromium(url: str, *options: str) -> str:
    assert CHROMIUM is not None
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    command += ["--virtual-time-budget=10000", "--window-size=1200,700", *options, url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


@tool
def lookup(query: str) -> str:
    """A fact about `query`."""
    return f"{query}: in the twelfth century"


def two_lookups_then_a_step() -> StaticPlanner:
    """n1 and n2 at once, then n3 reading both: a plan with a join to draw."""
    context = [{"$ref": "n1"}, {"$ref": "n2"}]
    return StaticPlanner(
        [
            [
                TaskNode(id=TaskId("n1"), kind="tool", tool="lookup", args={"query": "Oxford"}),
                TaskNode(id=TaskId("n2"), kind="tool", tool="lookup", args={"query": "Cambridge"}),
                TaskNode(
                    id=TaskId("n3"), kind=LLM_KIND, args={"question": "?", "context": context}
                ),
            ]
        ],
        answer=lambda state: "Oxford",
    )


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_a_headless_browser_streams_an_answer_and_draws_the_plan(tmp_path: Path) -> None:
    planner = two_lookups_then_a_step()
    with serving(config(planner=planner, tools=[lookup])) as base_url:
        url = base_url.removesuffix("/v1") + "/?q=" + quote("Which is older, Oxford or Cambridge?")
        dom = _chromium(url, "--dump-dom")
        shot = tmp_path / "page.png"
        _chromium(url, f"--screenshot={shot}")
    assert "The answer is Oxford as far as I can tell." in dom
    for node in ("n1", "n2", "n3"):
        assert f'class="node done" data-id="{node}"' in dom, node
    assert dom.count('class="edge"') == 2
    image = _pixels(shot)
    plan_half = [p for row in image for p in row[len(row) // 2 :]]
    assert sum(p == DONE_FILL for p in plan_half) > 3 * 3000, "the finished nodes are not drawn"


def _pixels(path: Path) -> list[list[tuple[int, int, int]]]:
    from matplotlib import image

    data = image.imread(path)
    return [[tuple(round(c * 255) for c in px[:3]) for px in row] for row in data]  # type: ignore[misc]
