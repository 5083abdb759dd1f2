"""The one trust check for URLs: is this URL, as the HTTP client will send it, under that prefix?

Every URL that decides trust goes through `within`: issuer `jku` prefixes and `jwks_url`s,
`fhirServer` bases, Bundle `next` links. Both sides are normalised first (RFC 3986 §6.2.2):
scheme and host lower-cased, the default port dropped, percent-encoded unreserved characters
decoded, dot segments removed, so `/keys/../other/` or `/keys/%2e%2e/other/` is compared as the
`/other/` the server will be asked for. The caller then uses the normalised URL, never the raw one:
what is fetched is what was compared. URLs a server might read in another way than the client
(userinfo, a backslash, an encoded `/` or `\\`, control characters or spaces) are refused.
"""

import re
from typing import Annotated
from urllib.parse import urlsplit, urlunsplit

import httpx
from pydantic import AfterValidator

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_AMBIGUOUS = re.compile(r"[\\\x00-\x20\x7f]")
"""A backslash (read as `/` by WHATWG parsers), control characters and spaces."""
_ENCODED_SLASH = re.compile(r"%(2[Ff]|5[Cc])")
"""In a path: an encoded `/` or `\\` that a server may decode into a path separator."""


def _decode_unreserved(escape: re.Match[str]) -> str:
    char = chr(int(escape.group(1), 16))
    return char if char in _UNRESERVED else escape.group(0).upper()


def normalised(url: str) -> str:
    """`url` as the HTTP client will send it, normalised; ValueError when it cannot be trusted."""
    if _AMBIGUOUS.search(url):
        raise ValueError("a backslash, a control character or a space")
    parts = urlsplit(url)
    if _ENCODED_SLASH.search(parts.path):
        raise ValueError("an encoded slash or backslash in the path")
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError("not an absolute http(s) URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("credentials in the URL")
    if parts.port is not None and not 0 < parts.port < 65536:  # urlsplit checks the upper bound
        raise ValueError("port out of range")
    path = _ESCAPE.sub(_decode_unreserved, parts.path)
    try:  # httpx lower-cases, drops the default port and removes dot segments, as it sends
        return str(httpx.URL(urlunsplit(parts._replace(path=path))))
    except httpx.InvalidURL as exc:
        raise ValueError(str(exc)) from None


def within(url: str, prefix: str) -> str | None:
    """`url` normalised when it is under `prefix` by scheme, host, port and whole path segments
    (after normalising both), with no fragment; None otherwise.

    `https://ehr.test/keys` admits `https://ehr.test/keys/a.json`, never
    `https://ehr.test.evil.example/...`, `https://ehr.test@evil.example/...`, `.../keys-evil`
    or `.../keys/../other/a.json`.
    """
    try:
        target, base = urlsplit(normalised(url)), urlsplit(normalised(prefix))
    except ValueError:
        return None
    if target.fragment or (target.scheme, target.netloc) != (base.scheme, base.netloc):
        return None
    path = base.path.rstrip("/")
    if target.path != base.path and not target.path.startswith(path + "/"):
        return None
    return urlunsplit(target)


def _trustable(url: str) -> str:
    normalised(url)  # a ValueError says what is wrong with it
    return url


TrustedURL = Annotated[str, AfterValidator(_trustable)]
"""A configured URL that `within` can compare: refused at start-up otherwise."""
