"""CDS Hooks 2.0 client authentication: a signed JWT bearer token on every call.

Checks, in order: a bearer token; header `alg` RS384 or ES384 (never `none` or HMAC), `typ`
JWT and a `kid`; an allow-listed `iss`; the key from that issuer's JWKS (its `jku`, which must be
under a prefix the issuer is trusted for once both are normalised, `urls.within`, and carry no
query unless configured so; or its configured JWKS URL, or an inline JWKS), cached with fetches
rationed per key location (`KeyCache`), of the key type the `alg` needs; the signature; `aud`
equal to the configured public base URL followed by the endpoint's path (never taken from the
request); `exp` and `iat` with a small leeway; and a `jti` not seen before. Any failure is a 401
that says no more than that; tokens are never logged. No issuer is trusted until configured.
"""

import hmac
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import jwt
from pydantic import BaseModel, ConfigDict

from cds_service.errors import CDSError, Unavailable
from cds_service.urls import TrustedURL, within

log = logging.getLogger(__name__)

ALGORITHMS = {"RS384": "RSA", "ES384": "EC"}
"""The algorithms accepted, with the key type (JWK `kty`) each needs."""
_REFRESH_SECONDS = 60.0
"""How often a key location may fetch a URL not yet known, and a held JWKS be fetched again."""
_DOCUMENTS_PER_LOCATION = 4
"""JWKS documents kept per key location (the most recently fetched)."""


class IssuerTrust(BaseModel):
    """A trusted issuer: where its keys come from, and where its requests may send the service.

    Keys: `jku` URL prefixes its tokens may name, a fixed `jwks_url`, or an inline `jwks`.
    `fhir_servers`: the fhirServer base URL prefixes its requests may make the service fetch
    from, with the request's access token (none: the service never fetches for this issuer).
    """

    model_config = ConfigDict(extra="forbid")

    jku: list[TrustedURL] = []
    jwks_url: TrustedURL | None = None
    jwks: dict[str, Any] | None = None
    fhir_servers: list[TrustedURL] = []


def secret_matches(given: str | None, secret: str | None) -> bool:
    """True when `given` (a bearer credential) equals the configured `secret`, compared in
    constant time as bytes: no secret configured, none given or any text at all is a mismatch,
    never an error."""
    if not secret or given is None:
        return False
    return hmac.compare_digest(given.encode(errors="surrogatepass"), secret.encode())


class Rejected(Exception):
    """Why a token was refused; logged for operators, never sent to the client."""


class KeyCache:
    """JWKS documents by URL, fetched on first use and again on an unknown `kid`.

    Whoever sends a token chooses its `jku` and `kid` before anything is verified, so fetching is
    rationed. A URL not yet known is fetched at most once per key location (a configured `jku`
    prefix or `jwks_url`) per `_REFRESH_SECONDS`, whatever URLs under it the tokens name; a
    document already held (it served keys) is fetched again at most once per `_REFRESH_SECONDS`
    on a budget of its own, so tokens naming unknown URLs cannot hold back a key rotation. At most
    `_DOCUMENTS_PER_LOCATION` documents are kept per location. The locations are the configured
    ones: the cache, and the fetches per interval, are bounded by the configuration.
    """

    def __init__(
        self,
        fetch: Callable[[str], Awaitable[dict[str, Any]]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._documents: dict[str, OrderedDict[str, dict[str, jwt.PyJWK]]] = {}
        self._fetched: dict[tuple[str, str | None], float] = {}
        """Last fetch per budget: (location, None) for unknown URLs, (location, url) for held."""

    async def key(self, location: str, url: str, kid: str) -> jwt.PyJWK:
        """Key `kid` of the JWKS at `url`, which is under the configured `location`."""
        documents = self._documents.setdefault(location, OrderedDict())
        known = documents.get(url)
        if known is not None and kid in known:
            return known[kid]
        budget = (location, None if known is None else url)
        last, now = self._fetched.get(budget), self._clock()
        if last is not None and now - last <= _REFRESH_SECONDS:
            raise Rejected(f"no key {kid!r} for {url}, and no fetch allowed yet")
        self._fetched[budget] = now
        try:
            known = keys_of(await self._fetch(url))
        except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise Rejected(f"JWKS {url} unusable: {type(exc).__name__}") from None
        if known:
            documents[url] = known
            documents.move_to_end(url)
            self._fetched[location, url] = now
            while len(documents) > _DOCUMENTS_PER_LOCATION:
                evicted, _ = documents.popitem(last=False)
                self._fetched.pop((location, evicted), None)
        if kid not in known:
            raise Rejected(f"no key {kid!r} in {url}")
        return known[kid]

    def __len__(self) -> int:
        """The JWKS documents held, all locations together."""
        return sum(map(len, self._documents.values()))


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
        public_base_url: str | None,
        fetch: Callable[[str], Awaitable[dict[str, Any]]] = fetch_jwks,
    ) -> None:
        """`first_use(iss, jti, exp)` records a JWT id and says whether it is new (shared store).

        `public_base_url` is where clients call the service: a token's `aud` must be it followed
        by the endpoint's path. It comes from configuration only, never from a request's `Host`
        or `X-Forwarded-*`; without it no token is accepted.
        """
        self._issuers = issuers
        self._base = public_base_url.rstrip("/") if public_base_url else None
        self._leeway = leeway_seconds
        self._keys = KeyCache(fetch)
        self._first_use = first_use

    async def verify(self, authorization: str | None, path: str) -> dict[str, Any]:
        """The claims of a token for the endpoint at `path`; CDSError 401 (with no detail) for
        anything wrong.

        Whatever the token holds, the answer is its claims or a 401: a token that makes the JWT
        library itself fail (a malformed member it does not expect) is refused, not a 500.
        """
        try:
            return await self._verify(authorization, path)
        except (Rejected, jwt.PyJWTError) as exc:
            log.warning("JWT refused: %s", exc)  # the reason, never the token
        except Unavailable:
            raise  # the replay check could not reach the store: a 503, not a refusal
        except Exception as exc:  # any failure to verify is a refusal, never a 500
            log.warning("JWT refused: %s while verifying", type(exc).__name__)
        raise CDSError.of(401, "authentication failed")

    async def fhir_servers(self, authorization: str | None, path: str) -> list[str]:
        """Verify the token; the fhirServer prefixes its issuer may send the service to."""
        claims = await self.verify(authorization, path)
        return self._issuers[claims["iss"]].fhir_servers

    async def _verify(self, authorization: str | None, path: str) -> dict[str, Any]:
        if self._base is None:
            raise Rejected("no public base URL configured: no audience to accept")
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
            audience=self._base + path,
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
            location, url = _jku_location(jku, trust)
            return await self._keys.key(location, url, kid)
        if trust.jwks is not None:
            inline = keys_of(trust.jwks)
            if kid not in inline:
                raise Rejected(f"no key {kid!r} in the configured JWKS")
            return inline[kid]
        if trust.jwks_url is None:
            raise Rejected("no jku and no JWKS configured for this issuer")
        configured = within(trust.jwks_url, trust.jwks_url)
        if configured is None:
            raise Rejected("the configured JWKS URL has a fragment")
        return await self._keys.key(configured, configured, kid)


def _jku_location(jku: Any, trust: IssuerTrust) -> tuple[str, str]:
    """The configured prefix a token's `jku` is under, and the `jku` normalised.

    A `jku` with a query is allowed only when it is itself configured (query and all): distinct
    queries would otherwise be distinct documents to fetch.
    """
    if isinstance(jku, str):
        for prefix in trust.jku:
            url = within(jku, prefix)
            if url is not None and (not urlsplit(url).query or url == within(prefix, prefix)):
                return prefix, url
    raise Rejected(f"jku {jku!r} not allowed for this issuer")
