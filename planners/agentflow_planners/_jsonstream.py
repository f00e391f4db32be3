"""Pull complete items out of a JSON array while the text that holds it is still arriving."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from agentflow.model import split_reasoning


class ArrayItemStream:
    """Feed text pieces; get each item of the array under `key` as soon as it is complete.

    `{"steps": [{...}, {...` yields the first object as soon as its closing brace arrives, so
    the executor can start it while the model is still writing the rest of the plan.
    """

    def __init__(self, key: str) -> None:
        self._opening = re.compile(r'"' + re.escape(key) + r'"\s*:\s*\[')
        self._decoder = json.JSONDecoder()
        self.text = ""
        self._position: int | None = None
        self.closed = False
        """The array's closing bracket has been seen."""

    def feed(self, piece: str) -> Iterator[Any]:
        self.text += piece
        answer, _ = split_reasoning(self.text)  # never take plan items out of thinking
        if self._position is None:
            match = self._opening.search(answer)
            if match is None:
                return
            self._position = match.end()
        yield from self._complete_items(answer)

    def _complete_items(self, answer: str) -> Iterator[Any]:
        assert self._position is not None
        while not self.closed:
            position = _skip(answer, self._position, " \t\r\n,")
            if position >= len(answer):
                return
            if answer[position] == "]":
                self.closed = True
                return
            try:
                item, end = self._decoder.raw_decode(answer, position)
            except json.JSONDecodeError:
                return  # incomplete so far: wait for more text
            self._position = end
            yield item


def _skip(text: str, position: int, characters: str) -> int:
    while position < len(text) and text[position] in characters:
        position += 1
    return position
