"""CDS Hooks 2.0 client authentication: a signed JWT bearer token on every call.

Checks, in order: a bearer token; header `alg` RS384 or ES384 (never `none` or HMAC), `typ`
JWT and a `kid`; an allow-listed `iss`; the key from that issuer's JWKS (its `jku`, which must
match one the issuer is trusted for by scheme, host, port and path prefix, or its configured
JWKS URL, or an inline JWKS), cached and refreshed once on an unknown `kid`, of the key type the
`alg` needs; the signature; `aud` equal to the endpoint's URL; `exp` and `iat` with a small
leeway; and a `jti` not seen before. Any failure is a 401 that says no more than that; tokens
are never logged. No issuer is trusted until configured.
"""

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import SplitResult, urlsplit

import anyio
import httpx
import jwt
from pydantic import BaseModel, ConfigDict

from cds_service.errors import CDSError, Unavailable

log = logging.getLogger(__name__)

ALGORITHMS = {"RS384": "RSA", "ES384": "EC"}
"""The algorithms accepted, with the key type (JWK `kty`) each needs."""
_REFRESH_SECONDS = 60.0
_DEFAULT_PORTS = {"http": 80, "https": 443}


class IssuerTrust(BaseModel):
    """A trusted issuer: where its keys come from, and where its requests may send the service.

    Keys: `jku` URL prefixes its tokens may name, a fixed `jwks_url`, or an inline `jwks`.
    `fhir_servers`: the fhirServer base URL prefixes its requests may make the service fetch
    from, with the request's access token (none: the service never fetches for this issuer).
    """

    model_config = ConfigDict(extra="forbid")

    jku: list[str] = []
    jwks_url: str | None = None
    jwks: dict[str, Any] | None = None
    fhir_servers: list[str] = []


def url_within(url: str, prefix: str) -> bool:
    """True when `url` is under `prefix` by scheme, host, port and path (not by string prefix).

    `https://ehr.test/keys` admits `https://ehr.test/keys/a.json`, never
    `https://ehr.test.evil.example/...`, `https://ehr.test@evil.example/...` or `.../keys-evil`.
    """
    try:
        target, base = urlsplit(url), urlsplit(prefix)
        same_origin = _origin(target) == _origin(base)
    except ValueError:  # an invalid port
        return False
    if not same_origin or target.username or target.password or target.fragment:
        return False
    path = base.path.rstrip("/")
    return target.path == base.path or target.path.startswith(path + "/")


def _origin(url: SplitResult) -> tuple[str, str | None, int | None]:
    scheme = url.scheme.lower()
    return scheme, url.hostname, url.port or _DEFAULT_PORTS.get(scheme)


class Rejected(Exception):
    """Why a token was refused; logged for operators, never sent to the client."""


class KeyCache:
    """JWKS documents by URL, fetched on first use and again (at most once a minute) on a miss."""

    def __init__(self, fetch: Callable[[str], Awaitable[dict[str, Any]]]) -> None:
        self._fetch = fetch
        self._keys: dict[str, dict[str, jwt.PyJWK]] = {}
        self._fetched: dict[str, float] = {}

    async def key(self, url: str, kid: str) -> jwt.PyJWK:
        known = self._keys.get(url, {})
        if kid not in known and time.monotonic() - self._fetched.get(url, -1e9) > _REFRESH_SECONDS:
            self._fetched[url] = time.monotonic()
            try:
                known = keys_of(await self._fetch(url))
            except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError) as exc:
                raise Rejected(f"JWKS {url} unusable: {type(exc).__name__}") from None
            self._keys[url] = known
        if kid not in known:
            raise Rejected(f"no key {kid!r} in {url}")
        return known[kid]


def keys_of(document: dict[str, Any]) -> dict[str, jwt.PyJWK]:
    """The keys of a JWKS document by `kid`; keys this library cannot use are skipped."""
    keys: dict[str, jwt.PyJWK] = {}
    for entry in document.get("keys", []):
        try:
            keys[entry["kid"]] = jwt.PyJWK(entry)
        except (jwt.PyJWKError, KeyError, TypeError, ValueError):
            continue
    return keys


async def fetch_jwks(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=5.0) as client:
        response = await client.get(url)
        response.raise_for_status()
        document: dict[str, Any] = response.json()
        return document


class Authenticator:
    """Verifies the bearer JWT of one request against the trusted issuers."""

    def __init__(
        self,
        issuers: dict[str, IssuerTrust],
        leeway_seconds: float,
        first_use: Callable[[str, str, float], bool],
        fetch: Callable[[str], Awaitable[dict[str, Any]]] = fetch_jwks,
    ) -> None:
        """`first_use(iss, jti, exp)` records a JWT id and says whether it is new (shared store)."""
        self._issuers = issuers
        self._leeway = leeway_seconds
        self._keys = KeyCache(fetch)
        self._first_use = first_use

    async def verify(self, authorization: str | None, audience: str) -> dict[str, Any]:
        """The token's claims; CDSError 401 (with no detail) for anything wrong.

        Whatever the token holds, the answer is its claims or a 401: a token that makes the JWT
        library itself fail (a malformed member it does not expect) is refused, not a 500.
        """
        try:
            return await self._verify(authorization, audience)
        except (Rejected, jwt.PyJWTError) as exc:
            log.warning("JWT refused: %s", exc)  # the reason, never the token
        except Unavailable:
            raise  # the replay check could not reach the store: a 503, not a refusal
        except Exception as exc:  # any failure to verify is a refusal, never a 500
            log.warning("JWT refused: %s while verifying", type(exc).__name__)
        raise CDSError.of(401, "authentication failed")

    async def fhir_servers(self, authorization: str | None, audience: str) -> list[str]:
        """Verify the token; the fhirServer prefixes its issuer may send the service to."""
        claims = await self.verify(authorization, audience)
        return self._issuers[claims["iss"]].fhir_servers

    async def _verify(self, authorization: str | None, audience: str) -> dict[str, Any]:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Rejected("no bearer token")
        header = jwt.get_unverified_header(token)
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise Rejected(f"algorithm {algorithm!r} not allowed")
        if str(header.get("typ", "")).upper() != "JWT":
            raise Rejected("typ is not JWT")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise Rejected("no kid")
        issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
        if not isinstance(issuer, str) or issuer not in self._issuers:
            raise Rejected(f"issuer {issuer!r} not trusted")
        key = await self._key(header.get("jku"), kid, self._issuers[issuer])
        if key.key_type != ALGORITHMS[algorithm]:
            raise Rejected(f"{algorithm} needs an {ALGORITHMS[algorithm]} key, {kid!r} is not")
        claims: dict[str, Any] = jwt.decode(
            token,
            key.key,
            algorithms=[algorithm],
            audience=audience,
            issuer=issuer,
            leeway=self._leeway,
            options={"require": ["iss", "aud", "exp", "iat", "jti"]},
        )
        if claims["iat"] > time.time() + self._leeway:
            raise Rejected("issued in the future")
        jti, expires = str(claims["jti"]), float(claims["exp"])
        if not await anyio.to_thread.run_sync(self._first_use, issuer, jti, expires):
            raise Rejected("jti replayed")
        return claims

    async def _key(self, jku: Any, kid: str, trust: IssuerTrust) -> jwt.PyJWK:
        """The issuer's key `kid`: from the token's allowed `jku`, or the configured JWKS."""
        if jku is not None:
            if isinstance(jku, str) and any(url_within(jku, prefix) for prefix in trust.jku):
                return await self._keys.key(jku, kid)
            raise Rejected(f"jku {jku!r} not allowed for this issuer")
        if trust.jwks is not None:
            inline = keys_of(trust.jwks)
            if kid not in inline:
                raise Rejected(f"no key {kid!r} in the configured JWKS")
            return inline[kid]
        if trust.jwks_url is None:
            raise Rejected("no jku and no JWKS configured for this issuer")
        return await self._keys.key(trust.jwks_url, kid)
