"""Headless Chromium driven over the DevTools protocol, for tests that click and type.

Debian's chromium listens on a free port (`--remote-debugging-port=0`, which it writes into
`DevToolsActivePort` in its profile folder); aiohttp (a dependency of agentflow) speaks the
websocket. Only what the chat page's tests need: load a page, run JavaScript, type, click,
wait for a condition in the page, resize, take a screenshot.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class BrowserError(AssertionError):
    """The page threw, or a condition never came true."""


class Page:
    """One tab: commands go out over its websocket, answers are matched by id."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self._socket:
            data = json.loads(message.data)
            future = self._waiting.pop(data.get("id", -1), None)
            if future is not None and not future.done():
                future.set_result(data)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[call_id] = future
        await self._socket.send_str(json.dumps({"id": call_id, "method": method, "params": params}))
        reply = await asyncio.wait_for(future, timeout=60)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (awaited if it is a promise)."""
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, seconds: float = 30.0) -> Any:
        """Wait until `expression` is truthy in the page; its value. The page checks it every
        50 ms (it has no event for every condition a test waits on)."""
        waiting = (
            "new Promise((resolve) => { const check = () => { const value = (" + expression + ");"
            " if (value) resolve(value); else setTimeout(check, 50); }; check(); })"
        )
        try:
            async with asyncio.timeout(seconds):
                return await self.evaluate(waiting)
        except TimeoutError:
            raise BrowserError(f"never true within {seconds} s: {expression}") from None

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete'")

    async def resize(self, width: int, height: int, *, mobile: bool = False) -> None:
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=mobile,
        )

    async def type_into(self, selector: str, text: str) -> None:
        """Focus the element and type `text` as keyboard input (events and all)."""
        await self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        await self.send("Input.insertText", text=text)

    async def press_enter(self) -> None:
        key = {"key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "text": "\r"}
        await self.send("Input.dispatchKeyEvent", type="keyDown", **key)
        await self.send("Input.dispatchKeyEvent", type="keyUp", **key)

    async def click(self, selector: str) -> None:
        """A real mouse click at the middle of the element."""
        box = await self.evaluate(
            f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
            ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        x, y = box
        for kind in ("mousePressed", "mouseReleased"):
            await self.send(
                "Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1
            )

    async def screenshot(self, path: Path) -> Path:
        data = await self.send("Page.captureScreenshot", format="png")
        await asyncio.to_thread(path.write_bytes, base64.b64decode(data["data"]))
        return path

    async def aclose(self) -> None:
        await self._socket.close()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


@asynccontextmanager
async def chromium(profile: Path, width: int = 1200, height: int = 800) -> AsyncIterator[Page]:
    """A headless Chromium with a fresh profile in `profile` (a new folder); yields its tab."""
    assert CHROMIUM is not None
    await asyncio.to_thread(profile.mkdir, parents=True, exist_ok=True)
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    command += ["--remote-debugging-port=0", f"--user-data-dir={profile}", "--no-first-run"]
    command += [f"--window-size={width},{height}", "about:blank"]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        async with aiohttp.ClientSession() as session:
            port = await _devtools_port(profile, process)
            async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
                targets = await response.json()
            target = next(t for t in targets if t["type"] == "page")
            socket = await session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
            page = Page(socket)
            try:
                await page.resize(width, height)
                yield page
            finally:
                await page.aclose()
    finally:
        process.terminate()
        try:
            async with asyncio.timeout(10):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()


PAGE = Path(str(resources.files("agentflow.server") / "static" / "index.html"))
"""The chat page as packaged (opened from the file: its functions need no server)."""


@asynccontextmanager
async def packaged_page(profile: Path, ready: str) -> AsyncIterator[Page]:
    """The packaged chat page in Chromium, once the JavaScript `ready` holds."""
    async with chromium(profile) as page:
        await page.goto(PAGE.as_uri())
        await page.wait_for(ready)
        yield page


async def _devtools_port(profile: Path, process: asyncio.subprocess.Process) -> int:
    """The port chromium writes into its profile folder once it listens."""
    active = profile / "DevToolsActivePort"
    for _ in range(600):
        lines = await asyncio.to_thread(_lines, active)
        if lines:
            return int(lines[0])
        if process.returncode is not None:
            raise BrowserError(f"chromium exited with {process.returncode}")
        await asyncio.sleep(0.05)
    raise BrowserError("chromium did not start within 30 s")


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []
