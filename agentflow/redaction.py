"""Secrets out of text that names a server: a URL's password and key-like query values, the
value of a `--token`-style flag, a `API_KEY=...` assignment or an `Authorization:`-style header
in a command line, a bearer token.

Used wherever a command line or a URL the user gave is echoed back: error messages and labels of
MCP servers, an eval run's manifest. The text stays recognisable (host, flag names, the rest of
the command); only the values are replaced, so a resumed run's redacted manifest still matches.
Names are matched narrowly (`--token-limit 500` and `--sort-key name` are settings, left as
they are), since two runs whose settings mask alike would pass for one run on resume.
"""

from __future__ import annotations

import re

__all__ = ["MASK", "redact_secrets"]

MASK = "***"

_SECRET_WORD = (
    r"(?:(?:api|access|secret|private|client)[_-]?key|apikey|(?:auth|access|refresh|api)?[_-]?token"
    r"|secret|passw(?:or)?d|pwd|passphrase|authorization|credentials?|signature|bearer)"
)
_SECRET_NAME = rf"(?:[a-z0-9]+[_.-])*{_SECRET_WORD}"
"""A name ending in a secret-like word: `api_key`, `GITHUB_TOKEN`, `X-Amz-Signature`,
`--password` (not `monkey`, `keys-dir`, `token-limit` or `sort-key`)."""
_VALUE = r"""(?:'[^']*'|"[^"]*"|[^\s'"]+)"""
"""A value as a shell writes it: quoted (spaces and all) or one word."""
_START = r"""(?:^|(?<=[\s'"]))"""
"""Where a flag or an assignment begins: the start, a space, or a quote (`'API_KEY=a#b'`)."""

_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^\s/@:]*:)[^\s@]+(?=@)", re.I)
_QUERY_VALUE = re.compile(rf"(?P<head>[?&#]{_SECRET_NAME}=)[^\s&#'\"]+", re.I)
_HEADER = re.compile(
    rf"(?P<head>\b{_SECRET_NAME}\s*:\s*(?:(?:bearer|basic|token|digest)\s+)?)[^\s'\"]+", re.I
)
_FLAG_VALUE = re.compile(rf"(?P<head>{_START}--?{_SECRET_NAME}(?:=|\s+))(?!-){_VALUE}", re.I)
_ASSIGNMENT = re.compile(rf"(?P<head>{_START}{_SECRET_NAME}=){_VALUE}", re.I)
_BEARER = re.compile(r"(?P<head>\bbearer\s+)[\w.~+/=-]{8,}", re.I)


def redact_secrets(text: str) -> str:
    """`text` with every secret-looking value replaced by `***` (see the module's docstring)."""
    for pattern in (_URL_PASSWORD, _QUERY_VALUE, _HEADER, _FLAG_VALUE, _ASSIGNMENT, _BEARER):
        text = pattern.sub(lambda m: m.group("head") + MASK, text)
    return text
