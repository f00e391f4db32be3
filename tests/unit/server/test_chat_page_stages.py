"""The chat page in headless Chromium against `agentflow serve` (a process) on a scripted model
server over loopback, stage by stage: the plan being made, a deep plan running, the answer
streaming, the final markdown answer, Stop, and a 375 px phone.

The model server holds each stage open on a gate (a `threading.Event`) until the test has
looked at it, so every screenshot shows the stage it names. Screenshots go to
`$AGENTFLOW_SCREENSHOTS` when set, else to the test's `tmp_path`.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest

from ..scripted_server import Reply, reply_chat, reply_sse, scripted_server, sse_pieces
from .cdp import CHROMIUM, Page, chromium

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium")

KEY = "sesame"
QUESTION = "Which is older, Oxford or Cambridge, and how do we know?"
LOOKUPS = [
    "When was the University of Oxford founded, according to its own history of teaching?",
    "When was the University of Cambridge founded, and by whom was it started?",
    "Which scholars left Oxford for Cambridge in 1209, and why did they leave?",
]
STEPS = [
    ("s1", ["Compare the founding dates in {l1} and {l2}", "What does {l3} say about origins?"]),
    ("s2", ["Weigh the two findings {s1} against each other: which claim holds up?"]),
    ("s3", ["Check {s2} for any dates on which the sources disagree"]),
    ("s4", ["Say which of the dates in {s3} the answer rests on"]),
    ("s5", ["Write the short answer to the question from {s4}"]),  # left to the join: not shown
]
SUB_QUESTIONS = {f"l{k}": text for k, text in enumerate(LOOKUPS, 1)} | {
    "s1_1": STEPS[0][1][0],
    "s1_2": STEPS[0][1][1],
    "s2": STEPS[1][1][0].replace("{s1}", "{s1_1}; {s1_2}"),  # the planner names both nodes
    "s3": STEPS[2][1][0],
    "s4": STEPS[3][1][0],
}
"""What each node's label must show (placeholders such as {l1} left as written)."""
HOSTILE = '<img src=x onerror="window.pwned=1"> <script>window.pwned=2</script>'
ANSWER_HEAD = (
    "## Oxford is older\n\nTeaching at **Oxford** existed by *1096*; Cambridge was founded "
    "in `1209` by scholars who left Oxford. See [the history](https://www.ox.ac.uk/about) "
    f"and {HOSTILE}.\n\n"
)
ANSWER_TAIL = (
    "| University | Founded |\n|---|---|\n| Oxford | 1096 |\n| Cambridge | 1209 |\n\n"
    + "".join(f"- point {k}: the sources agree on this one\n" for k in range(1, 31))
    + "\n```\noxford < cambridge\n```\n\nThe end of the answer."
)


@dataclass
class Script:
    """The scripted model: the dag planner's plan, each node's reply, the join, the answer."""

    plan_gate: threading.Event = field(default_factory=threading.Event)
    node_gate: threading.Event = field(default_factory=threading.Event)
    answer_gate: threading.Event = field(default_factory=threading.Event)
    endless: bool = False
    """The answer trickles until the client goes away (then `answer_closed` is set)."""
    answer_closed: threading.Event = field(default_factory=threading.Event)

    def open_all(self) -> None:
        for gate in (self.plan_gate, self.node_gate, self.answer_gate):
            gate.set()

    def __call__(self, path: str, body: dict[str, Any]) -> Reply:
        prompt = str(body["messages"][-1]["content"])
        if "Proposed answer:" in prompt:
            return reply_sse(self._answer())
        if "You plan how to answer" in prompt:
            return reply_sse(self._plan())
        if "Answer the question from the findings" in prompt:
            decision = {"enough": True, "answer": "Oxford", "missing": ""}
            return reply_chat(body, [json.dumps(decision)])
        if "Standalone question:" in prompt:
            return reply_chat(body, [QUESTION])
        if STEPS[2][1][0].split("{")[0] in prompt:  # s3 waits, so the plan is seen running
            self.node_gate.wait(timeout=60)
        return reply_chat(body, ["Oxford taught by 1096 and Cambridge began in 1209."])

    def _plan(self) -> Iterator[bytes]:
        self.plan_gate.wait(timeout=60)
        steps = [{"id": i, "tool": "llm", "inputs": inputs} for i, inputs in STEPS]
        text = json.dumps({"lookups": LOOKUPS, "steps": steps})
        yield from sse_pieces([text[k : k + 40] for k in range(0, len(text), 40)])

    def _answer(self) -> Iterator[bytes]:
        try:
            if self.endless:
                words = [f"word{k} " for k in range(2000)]
                for piece in sse_pieces(words):
                    time.sleep(0.05)
                    yield piece
                return
            yield from sse_pieces(_words(ANSWER_HEAD))[:-3]  # not the finish, usage, [DONE]
            self.answer_gate.wait(timeout=60)
            yield from sse_pieces(_words(ANSWER_TAIL))[1:]  # not the role chunk again
        finally:
            self.answer_closed.set()


def _words(text: str) -> list[str]:
    """`text` as the tokens a server streams: words, each after its space."""
    first, *rest = text.split(" ")
    return [first, *(f" {word}" for word in rest)]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Served:
    root: str
    script: Script


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """`agentflow serve --planner dag --api-key sesame` on the scripted model."""
    script = Script()
    with scripted_server(script) as model:
        port = _free_port()
        command = [sys.executable, "-m", "agentflow.cli", "serve", "--port", str(port)]
        command += ["--base-url", model.base_url, "--model", "m", "--planner", "dag"]
        command += ["--api-key", KEY, "--grace", "1"]
        log = tmp_path / "serve.log"
        with log.open("w") as sink:
            server = subprocess.Popen(command, stdout=sink, stderr=sink)
        try:
            root = f"http://127.0.0.1:{port}"
            _wait_up(root, server, log)
            yield Served(root=root, script=script)
        finally:
            script.open_all()
            server.terminate()
            server.wait(timeout=30)


def _wait_up(root: str, server: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(600):
        if server.poll() is not None:
            pytest.fail(f"agentflow serve exited: {log.read_text()}")
        try:
            if httpx2.get(root + "/", timeout=1).status_code == 200:
                return
        except httpx2.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"agentflow serve did not start: {log.read_text()}")


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("AGENTFLOW_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def _load(page: Page, root: str) -> None:
    """Load the page with no key stored: its list of agents is refused (401)."""
    await page.goto(root + "/")
    await page.wait_for(LISTED)


async def _type_key_and_ask(page: Page, question: str = QUESTION) -> None:
    await page.type_into("#key", KEY)
    await page.type_into("#question", question)
    await page.click("#send")


STATUS = "document.getElementById('status').textContent"
LISTED = (
    "performance.getEntriesByType('resource').some((e) => e.name.endsWith('/v1/models'))"
    " && document.getElementById('status').textContent"
)
"""The page has asked for the agents (and shown what came of it)."""
NODE_BOXES = """(() => {
  const port = document.getElementById('viewport'), p = port.getBoundingClientRect();
  return [...document.querySelectorAll('#nodes .node')].map((n) => {
    const r = n.getBoundingClientRect();
    return { id: n.dataset.id, cls: n.className, label: n.querySelector('.label').textContent,
             title: n.title, left: r.left - p.left + port.scrollLeft - port.clientLeft,
             top: r.top - p.top + port.scrollTop - port.clientTop,
             right: r.right - p.left + port.scrollLeft - port.clientLeft,
             bottom: r.bottom - p.top + port.scrollTop - port.clientTop,
             scrollWidth: port.scrollWidth, scrollHeight: port.scrollHeight,
             clientWidth: port.clientWidth };
  });
})()"""


def _assert_whole_plan_reachable(boxes: list[dict[str, Any]]) -> None:
    assert {b["id"] for b in boxes} == set(SUB_QUESTIONS), boxes
    for box in boxes:
        assert box["left"] >= -1 and box["top"] >= -1, box
        assert box["right"] <= box["scrollWidth"] + 1, box
        assert box["bottom"] <= box["scrollHeight"] + 1, box
        assert SUB_QUESTIONS[box["id"]] in box["label"], box
        assert SUB_QUESTIONS[box["id"]] in box["title"], box
        assert "llm(" not in box["label"], box
    for k, one in enumerate(boxes):
        for other in boxes[k + 1 :]:
            apart = one["right"] <= other["left"] or other["right"] <= one["left"]
            apart |= one["bottom"] <= other["top"] or other["bottom"] <= one["top"]
            assert apart, ("nodes overlap", one, other)


async def test_each_stage_of_a_deep_plan_in_chromium(
    served: Served, shots: Path, tmp_path: Path
) -> None:
    script = served.script
    async with chromium(tmp_path / "profile-stages") as page:
        await _load(page, served.root)
        assert "needs an API key" in await page.evaluate(STATUS)
        assert await page.evaluate("document.getElementById('key').classList.contains('needed')")
        await _type_key_and_ask(page)
        await page.wait_for(f"{STATUS}.includes('Making a plan')")
        bubble = "document.querySelector('.turn.assistant .activity').textContent"
        assert "Making a plan" in await page.evaluate(bubble)
        assert await page.evaluate("!!document.querySelector('#empty .spinner')")
        await page.screenshot(shots / "1-plan-being-made.png")

        script.plan_gate.set()
        running = "document.querySelector('.node.running[data-id=\"s3\"]')"
        await page.wait_for(f"{running} && document.querySelector('.node.done[data-id=\"s2\"]')")
        await page.wait_for(f"{STATUS}.includes('Running the plan')")
        boxes = await page.evaluate(NODE_BOXES)
        _assert_whole_plan_reachable(boxes)
        depths = {round(b["left"]) for b in boxes}, {round(b["top"]) for b in boxes}
        assert 5 in {len(depths[0]), len(depths[1])}, "l, s1, s2, s3 and s4: a rank each"
        await page.screenshot(shots / "2-plan-running-deep.png")
        await page.click("#zoom-fit")
        fitted = await page.evaluate(NODE_BOXES)
        assert fitted[0]["scrollWidth"] <= fitted[0]["clientWidth"] + 1, "Fit shows it all"
        await page.evaluate("document.querySelector('.node[data-id=\"s3\"]').focus()")
        detail = await page.evaluate("document.getElementById('detail').textContent")
        assert SUB_QUESTIONS["s3"] in detail
        await page.screenshot(shots / "2b-plan-running-fit.png")

        script.node_gate.set()
        await page.wait_for("document.querySelector('.answer')?.textContent.includes('pwned=2')")
        assert await page.evaluate("!!document.querySelector('.answer .caret')")
        assert await page.evaluate("!!document.querySelector('.answer strong')")
        assert "Writing the answer" in await page.evaluate(STATUS)
        await page.screenshot(shots / "3-answer-streaming.png")

        script.answer_gate.set()
        await page.wait_for(f"{STATUS}.includes('Answered')")
        await _assert_markdown(page)
        await page.screenshot(shots / "4-answer-final.png")
        await page.evaluate("document.getElementById('log').scrollTop = 0")
        await page.screenshot(shots / "4b-answer-final-top.png")


async def _assert_markdown(page: Page) -> None:
    answer = "document.querySelector('.turn.assistant .answer')"
    counts = await page.evaluate(
        f"""(() => {{ const a = {answer}; const n = (s) => a.querySelectorAll(s).length;
        return {{ h2: n('h2'), strong: n('strong'), em: n('em'), code: n('code'), li: n('li'),
                  td: n('td'), pre: n('pre'), link: n('a[href="https://www.ox.ac.uk/about"]'),
                  injected: document.querySelectorAll('.answer img, .answer script').length,
                  pwned: window.pwned || 0, text: a.textContent }}; }})()"""
    )
    assert counts["h2"] == 1 and counts["strong"] == 1 and counts["em"] == 1, counts
    assert counts["li"] == 30 and counts["td"] == 4 and counts["pre"] == 1, counts
    assert counts["link"] == 1 and counts["code"] >= 2, counts
    assert counts["injected"] == 0 and counts["pwned"] == 0, counts
    assert "<img src=x" in counts["text"] and "The end of the answer." in counts["text"]
    log = await page.evaluate(
        "(() => { const l = document.getElementById('log');"
        " return [l.scrollHeight, l.clientHeight, l.scrollTop]; })()"
    )
    assert log[0] > log[1], "a long answer is taller than the log, which scrolls"
    assert log[2] + log[1] >= log[0] - 2, "the log follows the answer to its end"


async def test_the_key_typed_after_the_page_loaded_is_sent_with_the_first_question(
    served: Served, tmp_path: Path
) -> None:
    """The page lists the agents when it loads; with `--api-key` that fails (401) before a key
    is typed, and the first question went out with the model '' (404 "the model '' does not
    exist") until a reload listed them with the key the failed question had stored."""
    served.script.open_all()
    async with chromium(tmp_path / "profile-key") as page:
        await _load(page, served.root)
        await _type_key_and_ask(page)
        answer = "document.querySelector('.turn.assistant')?.textContent"
        await page.wait_for(
            f"document.querySelector('.turn.error')?.textContent || {answer}.includes('end of')"
        )
        error = await page.evaluate("document.querySelector('.turn.error')?.textContent")
        assert error is None, f"the first question failed: {error!r}"
        assert await page.evaluate("document.getElementById('model').value") == "agentflow-dag"
        answer = await page.evaluate("document.querySelector('.turn.assistant').textContent")
        assert "The end of the answer." in answer


async def test_stop_ends_the_request_and_the_page_stays_usable(
    served: Served, shots: Path, tmp_path: Path
) -> None:
    script = served.script
    script.open_all()
    script.endless = True
    async with chromium(tmp_path / "profile-stop") as page:
        await _load(page, served.root)
        await _type_key_and_ask(page)
        await page.wait_for("document.querySelector('.answer')?.textContent.includes('word5')")
        assert await page.evaluate("document.getElementById('send').textContent") == "Stop"
        await page.click("#send")
        await page.wait_for(f"{STATUS}.includes('Stopped')")
        assert await asyncio.to_thread(script.answer_closed.wait, 15), "the stream was not ended"
        words = await page.evaluate("document.querySelector('.answer').textContent")
        await asyncio.sleep(0.5)
        assert await page.evaluate("document.querySelector('.answer').textContent") == words
        assert await page.evaluate("document.getElementById('send').textContent") == "Send"
        turn = await page.evaluate("document.querySelector('.turn.assistant').textContent")
        assert "Stopped." in turn
        await page.screenshot(shots / "5-stopped.png")

        script.endless = False
        await page.type_into("#question", "And which is bigger?")
        await page.press_enter()
        await page.wait_for(f"{STATUS}.includes('Answered')")
        last = "[...document.querySelectorAll('.turn.assistant')].at(-1).textContent"
        assert "The end of the answer." in await page.evaluate(last)


WIDTHS = (
    "[document.documentElement.scrollWidth, document.body.scrollWidth, innerWidth,"
    " ...['send', 'key', 'model', 'viewport', 'log', 'question'].map("
    "(id) => document.getElementById(id).getBoundingClientRect().right)]"
)


async def test_a_375_px_phone_has_no_sideways_overflow(
    served: Served, shots: Path, tmp_path: Path
) -> None:
    script = served.script
    script.plan_gate.set()
    async with chromium(tmp_path / "profile-narrow", width=375, height=740) as page:
        await page.resize(375, 740, mobile=True)
        await _load(page, served.root)
        await _type_key_and_ask(page)
        await page.wait_for("document.querySelector('.node.running[data-id=\"s3\"]')")
        assert max(await page.evaluate(WIDTHS)) <= 375
        boxes = await page.evaluate(NODE_BOXES)
        _assert_whole_plan_reachable(boxes)
        assert boxes[0]["scrollWidth"] > boxes[0]["clientWidth"], "the plan scrolls sideways"
        await page.screenshot(shots / "6-narrow-375-running.png")

        script.open_all()
        await page.wait_for(f"{STATUS}.includes('Answered')")
        assert max(await page.evaluate(WIDTHS)) <= 375
        log = "document.getElementById('log').clientHeight"
        assert await page.evaluate(log) > 400, "the plan folds away for the answer"
        await page.screenshot(shots / "7-narrow-375-answer.png")

        await page.click("#plan-toggle")
        await page.click("#zoom-fit")
        fitted = await page.evaluate(NODE_BOXES)
        _assert_whole_plan_reachable(fitted)
        assert fitted[0]["scrollWidth"] <= fitted[0]["clientWidth"] + 1, "Fit shows it all"
        assert max(await page.evaluate(WIDTHS)) <= 375
        await page.screenshot(shots / "8-narrow-375-plan-fit.png")
