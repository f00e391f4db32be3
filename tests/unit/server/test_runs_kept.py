"""`--keep-runs-mb` below one run's size still keeps the newest finished run readable."""

from __future__ import annotations

import httpx2

from ..scripted_server import scripted_server
from .conftest import serving
from .model_server import BODY, answering, server_config


def test_the_newest_run_is_kept_even_over_the_byte_budget() -> None:
    with scripted_server(answering()) as model:
        with serving(server_config(model.base_url, runs_kept_bytes=100)) as base_url:
            ids = [
                httpx2.post(f"{base_url}/chat/completions", json=BODY, timeout=30).json()["run_id"]
                for _ in range(2)
            ]
            older, newest = (httpx2.get(f"{base_url}/runs/{i}") for i in ids)
    assert newest.status_code == 200 and newest.json()["status"] == "ok"
    assert older.status_code == 404  # over the budget: only the newest stays
