"""CDS Hooks 2.0 client authentication: a signed JWT bearer token on every call.

Checks, in order: a bearer token; header `alg` RS384 or ES384 (never `none` or HMAC), `typ`
JWT and a `kid`; an allow-listed `iss`; the key from that issuer's JWKS (its `jku`, which must
be one the issuer is trusted for, or its configured JWKS URL), cached and refreshed once on an
unknown `kid`; the signature; `aud` equal to the endpoint's URL; `exp` and `iat` with a small
leeway; and a `jti` not seen before. Any failure is a 401 that says no more than that; tokens
are never logged.
"""

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx
import jwt
from pydantic import BaseModel, ConfigDict

from cds_service.errors import CDSError

log = logging.getLogger(__name__)

ALGORITHMS = ("RS384", "ES384")
_REFRESH_SECONDS = 60.0


class IssuerTrust(BaseModel):
    """What a trusted issuer may sign with: `jku` URL prefixes it may name, or a JWKS URL."""

    model_config = ConfigDict(extra="forbid")

    jku: list[str] = []
    jwks_url: str | None = None


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
                document = await self._fetch(url)
                known = {k["kid"]: jwt.PyJWK(k) for k in document.get("keys", []) if "kid" in k}
            except (httpx.HTTPError, ValueError, KeyError, TypeError, jwt.PyJWKError) as exc:
                raise Rejected(f"JWKS {url} unusable: {type(exc).__name__}") from None
            self._keys[url] = known
        if kid not in known:
            raise Rejected(f"no key {kid!r} in {url}")
        return known[kid]


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
        """The token's claims; CDSError 401 (with no detail) for anything wrong."""
        try:
            return await self._verify(authorization, audience)
        except (Rejected, jwt.PyJWTError) as exc:
            log.warning("JWT refused: %s", exc)  # the reason, never the token
            raise CDSError.of(401, "authentication failed") from None

    async def _verify(self, authorization: str | None, audience: str) -> dict[str, Any]:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Rejected("no bearer token")
        header = jwt.get_unverified_header(token)
        if header.get("alg") not in ALGORITHMS:
            raise Rejected(f"algorithm {header.get('alg')!r} not allowed")
        if str(header.get("typ", "")).upper() != "JWT":
            raise Rejected("typ is not JWT")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise Rejected("no kid")
        issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
        if not isinstance(issuer, str) or issuer not in self._issuers:
            raise Rejected(f"issuer {issuer!r} not trusted")
        trust = self._issuers[issuer]
        key = await self._keys.key(self._jwks_url(header.get("jku"), trust), kid)
        claims: dict[str, Any] = jwt.decode(
            token,
            key.key,
            algorithms=[header["alg"]],
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

    @staticmethod
    def _jwks_url(jku: Any, trust: IssuerTrust) -> str:
        if jku is not None:
            if isinstance(jku, str) and any(jku.startswith(prefix) for prefix in trust.jku):
                return jku
            raise Rejected(f"jku {jku!r} not allowed for this issuer")
        if trust.jwks_url is None:
            raise Rejected("no jku and no JWKS configured for this issuer")
        return trust.jwks_url
