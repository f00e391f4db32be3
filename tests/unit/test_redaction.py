"""`redact_secrets`: the values of secret-looking parts of a URL or a command line are masked,
everything else (hosts, paths, flag names, ordinary values) is left as written."""

from __future__ import annotations

import pytest

from agentflow.redaction import redact_secrets


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("https://me:hunter2@mcp.example.com/mcp", "https://me:***@mcp.example.com/mcp"),
        ("http://h/mcp?api_key=abc&page=2", "http://h/mcp?api_key=***&page=2"),
        ("http://h/x?X-Amz-Signature=ff&token=t", "http://h/x?X-Amz-Signature=***&token=***"),
        ("npx server --token abc --verbose", "npx server --token *** --verbose"),
        ("npx server --api-key=abc", "npx server --api-key=***"),
        ("server --apikey abc", "server --apikey ***"),
        ("GITHUB_TOKEN=ghp_1 node s.js", "GITHUB_TOKEN=*** node s.js"),
        ("docker run -e DB_PASSWORD=pw img", "docker run -e DB_PASSWORD=*** img"),
        ('curl -H "Authorization: Bearer sk-abc.def"', 'curl -H "Authorization: Bearer ***"'),
        # found by review: quoted by shlex.join, other header forms, values with spaces
        ("docker run -e 'API_KEY=ab#cd'", "docker run -e 'API_KEY=***'"),
        ("server '--api-key=ab$cd'", "server '--api-key=***'"),
        ("--header 'Authorization: token ghp_abc'", "--header 'Authorization: token ***'"),
        ("--header 'X-API-Key: abc'", "--header 'X-API-Key: ***'"),
        ("server --password 'my pass phrase'", "server --password ***"),
        ("postgres://user:pa/ss@host/db", "postgres://user:***@host/db"),
        ("https://x/mcp#access_token=abc", "https://x/mcp#access_token=***"),
    ],
)
def test_secret_values_are_masked(given: str, shown: str) -> None:
    assert redact_secrets(given) == shown


@pytest.mark.parametrize(
    "given",
    [
        "http://127.0.0.1:8000/mcp",
        "python server.py --port 8000 --verbose",
        "python -m keyring_server --keys-dir /tmp",
        "server --monkey banana",
        "python tokenizer.py data.txt",
        "http://h/mcp?tokens=1",
        "server --password --verbose",  # a flag with no value
        # settings that only look like secrets: masked alike, two runs would resume as one
        "uvx srv --token-limit 500",
        "srv --sort-key name --primary-key id",
        "srv --auth none --pass-through true",
        "the bearer of bad news",
    ],
)
def test_everything_else_is_left_as_written(given: str) -> None:
    assert redact_secrets(given) == given
