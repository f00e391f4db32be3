"""The chat page at `/`: self-contained, and in a real headless browser it draws the plan."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
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


def _chromium(url: str, *options: str, until: Callable[[str], bool]) -> str:
    """Load `url` headless and return what `options` print, once `until` holds for it.

    Chromium's virtual time runs on once a streamed response's headers are in, so on a loaded
    machine the page can be captured before the stream has ended: it is loaded again, three
    times at most; a page that never gets there fails.
    """
    assert CHROMIUM is not None
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    command += ["--virtual-time-budget=10000", "--window-size=1200,700", *options, url]
    output = ""
    for _ in range(3):
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
        output = done.stdout
        if until(output):
            break
    return output


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
        answer = "The answer is Oxford as far as I can tell."
        dom = _chromium(url, "--dump-dom", until=lambda out: answer in out)
        shot = tmp_path / "page.png"
        _chromium(url, f"--screenshot={shot}", until=lambda _: _done_pixels(shot) > 3 * 3000)
    assert answer in dom
    for node in ("n1", "n2", "n3"):
        assert f'class="node done" data-id="{node}"' in dom, node
    assert dom.count('class="edge"') == 2
    assert _done_pixels(shot) > 3 * 3000, "the finished nodes are not drawn"


def _done_pixels(path: Path) -> int:
    """Pixels of the plan's half of the screenshot in a finished node's fill."""
    import numpy as np
    from matplotlib import image

    data = image.imread(path)
    plan_half = np.round(data[:, data.shape[1] // 2 :, :3] * 255)
    return int((plan_half == np.array(DONE_FILL)).all(axis=2).sum())
