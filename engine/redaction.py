"""Credentials in URLs: find them at entry, hide them on the way out.

Arbor reads API keys from environment variables only (a model's ``api_key_env``). A base URL
that carries a key anyway, as ``user:secret@host`` or ``?api_key=...``, is refused where it is
typed (``url_credentials`` says what is wrong). Files written before that refusal existed may
still hold one, so everything that shows, records or exports a URL or an error passes it
through ``redact`` first: model labels, backend errors, trace rows, exports.

The patterns are plain regular expressions so the trace store's migration can apply the same
rule in SQL (``REDACT_PATTERNS``, RE2 syntax, which DuckDB's ``regexp_replace`` speaks).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

MASK = "***"

#: Query parameter names that carry secrets (``api_key``, ``access_token``, ``sig`` ...).
_SECRET_PARAM = r"[^=&\s#/]*(?:key|token|secret|passw(?:or)?d|pwd|auth|sig|signature|credential)"
_SECRET_PARAM_NAME = re.compile(rf"(?i)^{_SECRET_PARAM}[^=&\s#/]*$")

#: (pattern, replacement) pairs, applied in order; valid in Python's ``re`` and in RE2.
REDACT_PATTERNS: tuple[tuple[str, str], ...] = (
    # userinfo: scheme://user:password@host -> scheme://***@host
    (r"(?i)([a-z][a-z0-9+.-]*://)[^/\s@?#]+@", r"\1" + MASK + "@"),
    # a secret-looking query parameter: ?api_key=abc -> ?api_key=***
    (rf"(?i)([?&]{_SECRET_PARAM}[^=&\s#/]*=)" + "[^&\\s#\"']+", r"\1" + MASK),
)
_COMPILED = tuple((re.compile(pattern), repl) for pattern, repl in REDACT_PATTERNS)


def url_credentials(url: str | None) -> list[str]:
    """What in ``url`` is a credential ("a user name", "query parameter 'api_key'"), if any."""
    if not url:
        return []
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return []
    found = []
    if parts.password is not None:
        found.append("a user name and password")
    elif parts.username is not None:
        found.append("a user name")
    found += [
        f"query parameter {name!r}"
        for name, _ in parse_qsl(parts.query, keep_blank_values=True)
        if _SECRET_PARAM_NAME.match(name)
    ]
    return found


def credentials_refusal(url: str | None) -> str | None:
    """The one-line refusal for a URL with credentials, or None when it has none."""
    found = url_credentials(url)
    if not found:
        return None
    return (
        f"the base URL carries {' and '.join(found)}; Arbor never stores keys in URLs. Put the "
        "key in an environment variable (e.g. export MY_ENDPOINT_KEY=...), give that variable's "
        "name as the model's API key variable, and remove it from the URL"
    )


def redact(text: str) -> str:
    """``text`` with every URL credential replaced by ``***`` (safe on any text)."""
    if "://" not in text and "=" not in text:
        return text
    for pattern, repl in _COMPILED:
        text = pattern.sub(repl, text)
    return text
