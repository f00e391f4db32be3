"""The chat page at `/` is one self-contained file.

How it behaves in a browser (the plan drawn at any depth, the answer streamed, Stop, a phone's
width) is tested in Chromium over the DevTools protocol, stage by stage, in
`test_chat_page_stages.py`. A test here once loaded the page with `--dump-dom` and Chromium's
virtual time, which runs on before a streamed answer has ended on a loaded machine: it failed
under load and checked less than the stage tests do."""

from __future__ import annotations

import re

import httpx2


def test_the_page_is_served_and_fetches_nothing_from_elsewhere(base_url: str) -> None:
    response = httpx2.get(base_url.removesuffix("/v1") + "/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "<svg" in page and "v1/chat/completions" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert not re.search(r"""(@import|url\(\s*["']?https?:|fetch\(\s*["']https?:)""", page)
