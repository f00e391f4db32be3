"""Secrets out of text that names a server: a URL's password and key-like query values, the
value of a `--token`-style flag or a `API_KEY=...` assignment in a command line, a bearer token.

Used wherever a command line or a URL the user gave is echoed back: error messages and labels of
MCP servers, an eval run's manifest. The text stays recognisable (host, flag names, the rest of
the command); only the values are replaced, so a resumed run's redacted manifest still matches.
"""

from __future__ import annotations

import re

__all__ = ["MASK", "redact_secrets"]

MASK = "***"

_SECRET_WORD = (
    r"(?:api-?key|key|token|secret|passw(?:or)?d|pwd|pass|auth|authorization|credentials?"
    r"|signature|sig)"
)
_SECRET_NAME = rf"(?:[a-z0-9]+[_.-])*{_SECRET_WORD}(?:[_.-][a-z0-9]+)*"
"""A name with a secret-like word as one of its parts: `api_key`, `GITHUB_TOKEN`, `X-Amz-Signature`
(not `monkey` or `keys-dir`)."""
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^\s/@:]*:)[^\s/@]+(?=@)", re.I)
_QUERY_VALUE = re.compile(rf"(?P<head>[?&]{_SECRET_NAME}=)[^\s&#]+", re.I)
_FLAG_VALUE = re.compile(rf"(?P<head>(?:^|\s)--?{_SECRET_NAME}(?:=|\s+))(?!-)\S+", re.I)
_ASSIGNMENT = re.compile(rf"(?P<head>(?:^|\s){_SECRET_NAME}=)\S+", re.I)
_BEARER = re.compile(r"(?P<head>\bbearer\s+)[\w.~+/=-]+", re.I)


def redact_secrets(text: str) -> str:
    """`text` with every secret-looking value replaced by `***` (see the module's docstring)."""
    for pattern in (_URL_PASSWORD, _QUERY_VALUE, _FLAG_VALUE, _ASSIGNMENT, _BEARER):
        text = pattern.sub(lambda m: m.group("head") + MASK, text)
    return text
