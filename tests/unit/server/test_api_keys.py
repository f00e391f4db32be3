"""An API key that is empty or blank never leaves the server open: refused at start (exit 2)
and never matched by an empty bearer."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import pytest

from agentflow.cli import main
from agentflow.exceptions import UserError
from agentflow.server import ServerConfig
from agentflow.server.cli import API_KEYS_ENV

from .conftest import config, serving
from .model_server import BODY


@pytest.mark.parametrize("key", ["", "  "])
def test_an_empty_api_key_is_refused_at_start(
    key: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(API_KEYS_ENV, raising=False)
    assert main(["serve", "--api-key", key]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--api-key is empty or blank" in err


@pytest.mark.parametrize("env", ["", " , ", "key-1,"])
def test_blank_keys_in_the_environment_are_refused_at_start(
    env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(API_KEYS_ENV, env)
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{API_KEYS_ENV} has an empty or blank key" in err


def test_a_server_config_refuses_an_empty_key() -> None:
    (agent,) = config().agents
    for keys in ({""}, {"ok", " "}, {" padded"}):
        with pytest.raises(UserError, match="empty, blank"):
            ServerConfig(agents=(agent,), api_keys=frozenset(keys))


def _status(base_url: str, authorization: str) -> int:
    """The status of a chat sent with this Authorization header verbatim (httpx2 refuses a
    header value ending in a space, which a careless client may still send)."""
    url = urlsplit(f"{base_url}/chat/completions")
    body = json.dumps(BODY)
    head = (
        f"POST {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n"
        f"Authorization: {authorization}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall((head + body).encode())
        return int(sock.makefile("rb").readline().split()[1])


def test_an_empty_bearer_never_matches() -> None:
    with serving(config(api_keys=frozenset({"alice"}))) as base_url:
        for header in ("Bearer ", "Bearer   ", "Bearer", ""):
            assert _status(base_url, header) == 401, header
        assert _status(base_url, "Bearer alice") == 200
