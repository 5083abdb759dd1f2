"""What a red team found (issue 18), kept as tests: each failed on the code it was found in.

jku dot segments past the issuer's key location (and the same on a Bundle `next` link), key
fetches an anonymous caller could multiply, a token's audience taken from the Host header, pages
served without their Content-Security-Policy, a 500 for a header that is not text, a redirect
built from the Host header, and live links made from record text by an autolinking renderer.
"""

import base64
import hashlib
import html as html_text
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from hypothesis import assume, given
from hypothesis import settings as examples
from hypothesis import strategies as st
from markdown_it import MarkdownIt
from markdown_it.rules_core import linkify
from playwright.sync_api import expect

from cds_service import cli
from cds_service.app import create_app
from cds_service.auth import Authenticator, IssuerTrust, KeyCache, Rejected
from cds_service.cards import _LINKLIKE, inert
from cds_service.errors import CDSError
from cds_service.models import HookRequest, dump
from cds_service.routes.pages import STATIC
from cds_service.settings import UnsafeSettings
from cds_service.triage import Triage
from cds_service.urls import within
from tests.chromium import chromium
from tests.conftest import EXAMPLE_TODAY, app_settings, load_example
from tests.fhir_server import FhirServer
from tests.loopback import serving
from tests.test_auth import BASE, ISSUER, RSA_KEY, _jwk, call, jwks, token  # noqa: F401
from tests.test_prefetch_fetch import TOKEN, _request, _search, _serve_record, app_client, server  # noqa: F401

ATTACKER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EHR_B = "https://ehr-b.example.org"
PATH = "/cds-services/patient-view"

# --- 1. URLs that decide trust are compared as they will be sent ------------------------------


@pytest.mark.parametrize(
    ("url", "sent"),
    [
        ("https://ehr-b.example.org/keys/jwks.json", "https://ehr-b.example.org/keys/jwks.json"),
        ("HTTPS://EHR-B.example.org:443/keys/./jwks.json", f"{EHR_B}/keys/jwks.json"),
        ("https://ehr-b.example.org/keys/v1/../jwks.json", f"{EHR_B}/keys/jwks.json"),
        ("https://ehr-b.example.org/%6Beys/jwks.json", f"{EHR_B}/keys/jwks.json"),
        ("https://ehr-b.example.org/keys/../other/jwks.json", None),
        ("https://ehr-b.example.org/keys/%2e%2e/other/jwks.json", None),
        ("https://ehr-b.example.org/keys/.%2E/other/jwks.json", None),
        ("https://ehr-b.example.org/keys/a%2F..%2F..%2Fother/jwks.json", None),
        ("https://ehr-b.example.org/keys\\..\\other/jwks.json", None),
        ("https://ehr-b.example.org/keys/jwks.json#kid", None),
        ("https://ehr-b.example.org:8443/keys/jwks.json", None),
        ("https://ehr-b.example.org@evil.example/keys/jwks.json", None),
    ],
)
def test_a_url_is_trusted_as_it_will_be_sent(url: str, sent: str | None) -> None:
    assert within(url, f"{EHR_B}/keys/") == sent


def _verifier(
    issuers: dict[str, IssuerTrust], documents: dict[str, dict[str, Any]]
) -> tuple[Callable[..., int], list[str]]:
    """A verification (header `changes` -> status) by an authenticator whose JWKS fetches come
    from `documents` (no network), and the URLs it fetched."""
    fetched: list[str] = []

    async def fetch(url: str) -> dict[str, Any]:
        fetched.append(url)
        if url not in documents:
            raise httpx.HTTPError(f"404 for {url}")
        return documents[url]

    authenticator = Authenticator(issuers, 30, lambda *_: True, BASE, fetch)

    def verify(**changes: Any) -> int:
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": BASE + PATH, "exp": now + 60, "iat": now}
        claims["jti"] = str(uuid.uuid4())
        header = {"typ": "JWT", "kid": changes.pop("kid", "rsa-1"), **changes}
        key = ATTACKER_KEY if header["kid"] == "evil" else RSA_KEY
        signed = jwt.encode(claims, key, algorithm="RS384", headers=header)
        try:
            anyio.run(authenticator.verify, f"Bearer {signed}", PATH)
        except CDSError as exc:
            return exc.status
        return 200

    return verify, fetched


KEYS = {"keys": [_jwk(RSA_KEY, "rsa-1", "RS384")]}
ATTACKER_KEYS = {"keys": [_jwk(ATTACKER_KEY, "evil", "RS384")]}


def test_jku_dot_segments_do_not_leave_the_issuers_key_location() -> None:
    """The finding: trusted for `/keys/`, a token named `/keys/../other/jwks.json`, signed with a
    key served at `/other/`, and was accepted (the HTTP client removed the dot segments)."""
    verify, fetched = _verifier(
        {ISSUER: IssuerTrust(jku=[f"{EHR_B}/keys/"])},
        {f"{EHR_B}/keys/jwks.json": KEYS, f"{EHR_B}/other/jwks.json": ATTACKER_KEYS},
    )
    for dots in ("..", "%2e%2e", ".%2E"):
        assert verify(kid="evil", jku=f"{EHR_B}/keys/{dots}/other/jwks.json") == 401
    assert fetched == []
    assert verify(jku=f"{EHR_B}/keys/v1/../jwks.json") == 200
    assert fetched == [f"{EHR_B}/keys/jwks.json"]  # what was compared is what was fetched


@pytest.mark.slow  # a loopback JWKS server and an app of its own (~1 s)
def test_jku_dot_segments_over_http(jwks: FhirServer) -> None:  # noqa: F811
    """The same through the app and a real HTTP client: the issuer is trusted for
    `{jwks.base}/`, the attacker's keys are served beside it at `/other/`."""
    jwks.routes["/other/jwks.json"] = (200, ATTACKER_KEYS)
    trust = {ISSUER: IssuerTrust(jku=[f"{jwks.base}/"])}
    settings = app_settings(auth_disabled=False, trusted_issuers=trust, public_base_url=BASE)
    forged = token(jwks, jku=f"{jwks.base}/../other/jwks.json", kid="evil", key=ATTACKER_KEY)
    with TestClient(create_app(settings)) as client:
        assert call(client, forged).status_code == 401
        assert call(client, token(jwks)).status_code == 200
    assert [path for path, _ in jwks.requests] == ["jwks.json"]


@pytest.mark.slow  # a loopback FHIR server and an app of its own (~1 s)
def test_a_next_link_with_dot_segments_gets_no_access_token(
    server: FhirServer,  # noqa: F811
    app_client: TestClient,  # noqa: F811
) -> None:
    """The finding: `{fhirServer}/../outside/...` as a `next` link sent the access token outside
    the fhirServer base. (The loopback server records paths under /fhir/ without that prefix.)"""
    _serve_record(server, pages=2)
    first = server.routes[_search("observations-laboratory")][1]
    following = "Observation?category=laboratory&page=1"
    first["link"] = [{"relation": "next", "url": f"{server.base}/../outside/{following}"}]
    server.routes[f"/outside/{following}"] = server.routes.pop(following)
    response = app_client.post(PATH, json=_request(server, drop=("observations",)))
    assert response.status_code == 412
    assert "away from fhirServer" in response.json()["issue"][0]["diagnostics"]
    assert [path for path, _ in server.requests if path.startswith("/")] == []
    assert TOKEN not in response.text


# --- 2. Key fetching that an anonymous caller cannot drive ------------------------------------


def test_tokens_cannot_make_the_service_fetch_keys_once_per_url() -> None:
    """The finding: twelve tokens with `jku=.../jwks.json?n=1..12` made twelve fetches."""
    verify, fetched = _verifier(
        {ISSUER: IssuerTrust(jku=[f"{EHR_B}/keys/"])}, {f"{EHR_B}/keys/jwks.json": KEYS}
    )
    assert verify(jku=f"{EHR_B}/keys/jwks.json") == 200
    for n in range(12):
        assert verify(kid=f"k{n}", jku=f"{EHR_B}/keys/jwks.json?n={n}") == 401
        assert verify(kid=f"k{n}", jku=f"{EHR_B}/keys/k{n}.json") == 401
        assert verify(kid=f"k{n}", jku=f"{EHR_B}/keys/jwks.json#{n}") == 401
        assert verify(kid=f"k{n}", jku=f"{EHR_B}/keys/jwks.json") == 401  # a kid it lacks
    assert verify(jku=f"{EHR_B}/keys/jwks.json") == 200  # cached: still good
    assert fetched == [f"{EHR_B}/keys/jwks.json"]  # one fetch per key location and minute


def test_a_jku_with_a_query_is_allowed_only_when_configured_so() -> None:
    tenant = f"{EHR_B}/tenants/jwks.json?tenant=a"
    verify, fetched = _verifier({ISSUER: IssuerTrust(jku=[tenant])}, {tenant: KEYS})
    assert verify(jku=f"{EHR_B}/tenants/jwks.json?tenant=b") == 401
    assert verify(jku=tenant) == 200
    assert fetched == [tenant]


def test_tokens_naming_unknown_urls_cannot_hold_back_a_key_rotation() -> None:
    """Unknown URLs share one fetch a minute per location; a key set already held has its own,
    so an attacker who spends the location's fetch every minute does not lock out a new key."""
    now = [0.0]
    documents = {f"{EHR_B}/keys/jwks.json": KEYS}
    fetched: list[str] = []

    async def fetch(url: str) -> dict[str, Any]:
        fetched.append(url)
        if url not in documents:
            raise httpx.HTTPError(f"404 for {url}")
        return documents[url]

    async def key(cache: KeyCache, url: str, kid: str) -> str:
        try:
            return (await cache.key(f"{EHR_B}/keys/", f"{EHR_B}/keys/{url}", kid)).key_id or ""
        except Rejected:
            return "refused"

    cache = KeyCache(fetch, clock=lambda: now[0])
    assert anyio.run(key, cache, "jwks.json", "rsa-1") == "rsa-1"
    now[0] = 61.0  # a minute on, the issuer rotates and an attacker spends the location's fetch
    rotated = [_jwk(RSA_KEY, "rsa-1", "RS384"), _jwk(ATTACKER_KEY, "rsa-2", "RS384")]
    documents[f"{EHR_B}/keys/jwks.json"] = {"keys": rotated}
    assert anyio.run(key, cache, "bogus.json", "x") == "refused"
    assert anyio.run(key, cache, "bogus-2.json", "x") == "refused"
    assert anyio.run(key, cache, "jwks.json", "rsa-2") == "rsa-2"
    assert anyio.run(key, cache, "jwks.json", "rsa-3") == "refused"  # no second fetch yet
    assert fetched == [f"{EHR_B}/keys/{name}" for name in ("jwks.json", "bogus.json", "jwks.json")]


def test_the_key_cache_is_bounded_per_location(monkeypatch: pytest.MonkeyPatch) -> None:
    """Even were every fetch allowed, a location keeps a few documents, not one per URL."""
    monkeypatch.setattr("cds_service.auth._REFRESH_SECONDS", -1.0)

    async def fetch(url: str) -> dict[str, Any]:
        return KEYS

    async def fill(cache: KeyCache) -> None:
        for n in range(50):
            await cache.key(f"{EHR_B}/keys/", f"{EHR_B}/keys/{n}.json", "rsa-1")

    cache = KeyCache(fetch)
    anyio.run(fill, cache)
    assert 1 <= len(cache) <= 4


# --- 3. A token is good only for the audience it was minted for, whatever the headers -------


def test_start_up_refuses_trusted_issuers_without_a_public_base_url() -> None:
    trust = {ISSUER: IssuerTrust(jwks=KEYS)}
    for settings in (
        app_settings(auth_disabled=False, trusted_issuers=trust),
        app_settings(auth_disabled=False, trust_sandbox=True),
    ):
        with pytest.raises(UnsafeSettings, match="CDS_PUBLIC_BASE_URL is not set"):
            create_app(settings)


def test_serve_says_what_to_set_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("CDS_TRUSTED_ISSUERS", json.dumps({ISSUER: {"jwks": KEYS}}))
    monkeypatch.setenv("CDS_DATABASE_URL", f"sqlite:///{tmp_path / 'db.sqlite'}")
    monkeypatch.delenv("CDS_PUBLIC_BASE_URL", raising=False)
    monkeypatch.delenv("CDS_AUTH_DISABLED", raising=False)
    monkeypatch.setattr("uvicorn.run", lambda *_, **__: None)  # were it to start, not forever
    assert cli.main(["serve"]) == 2
    assert "CDS_PUBLIC_BASE_URL is not set" in capsys.readouterr().err


def test_a_public_base_url_must_be_one_the_service_can_trust() -> None:
    with pytest.raises(ValueError, match="public_base_url"):
        app_settings(public_base_url="cds.example.org")


@pytest.mark.slow  # an app under uvicorn on loopback (~1 s)
def test_host_and_forwarded_headers_never_decide_the_audience(jwks: FhirServer) -> None:  # noqa: F811
    """The finding: a token minted for another CDS service was accepted when replayed with that
    service's name in `Host` (and `X-Forwarded-Proto`). Real uvicorn, which honours forwarded
    headers from loopback."""
    trust = {ISSUER: IssuerTrust(jku=[f"{jwks.base}/"])}
    public = "https://cds.example.org"
    settings = app_settings(auth_disabled=False, trusted_issuers=trust, public_base_url=public)
    request = load_example("neurology-radiculopathy--seven-weeks")[0]
    other = "https://other-cds.example/cds-services/patient-view"
    spoofed = [
        {"Host": "other-cds.example", "X-Forwarded-Proto": "https"},
        {"Host": "other-cds.example"},
        {"X-Forwarded-Host": "other-cds.example", "X-Forwarded-Proto": "https"},
    ]
    with serving(settings) as url:
        for headers in spoofed:
            bearer = {"Authorization": f"Bearer {token(jwks, aud=other)}"}
            answer = httpx.post(url + PATH, json=request, headers=headers | bearer)
            assert answer.status_code == 401, headers
        bearer = {"Authorization": f"Bearer {token(jwks, aud=public + PATH)}"}
        answer = httpx.post(url + PATH, json=request, headers=spoofed[0] | bearer)
        assert answer.status_code == 200, answer.text


PAGES = ["/review", "/admin", "/playground", "/playground/hooks", "/docs", "/metrics"]
"""The GET routes the OpenAPI document leaves out."""


def _get_paths(client: TestClient) -> list[str]:
    """Every GET route without a path parameter: the documented ones, and the pages."""
    document = client.get("/openapi.json").json()
    documented = [p for p, item in document["paths"].items() if "get" in item and "{" not in p]
    return ["/openapi.json", *documented, *PAGES]


def test_no_redirect_is_built_from_the_host_header(client: TestClient) -> None:
    """The finding: `GET /admin/` with `Host: evil.example` redirected to evil.example."""
    for path in [*_get_paths(client), "/static"]:
        answer = client.get(f"{path}/", headers={"Host": "evil.example"}, follow_redirects=False)
        assert not answer.is_redirect, path
        assert "evil.example" not in str(answer.headers), path


# --- 4. Every HTML response carries the security headers, whatever its path -----------------


def _html_paths(client: TestClient) -> list[str]:
    """Every page the try-it app serves: its GET routes and its static files."""
    static = [f"/static/{path.relative_to(STATIC)}" for path in STATIC.rglob("*") if path.is_file()]
    return [*_get_paths(client), *static]


def test_every_html_response_has_the_security_headers(client: TestClient) -> None:
    """The finding: `/static/review.html`, `/static/admin.html` and `/static/playground.html`
    (the pages again, by another path) and the try-it `/docs` and `/redoc` had no CSP (`/redoc`
    is no longer served)."""
    pages = 0
    for path in _html_paths(client):
        answer = client.get(path)
        if not answer.headers.get("content-type", "").startswith("text/html"):
            continue
        pages += 1
        policy = answer.headers.get("Content-Security-Policy", "")
        assert "frame-ancestors 'none'" in policy, path
        assert "object-src 'none'" in policy, path
        assert "base-uri 'none'" in policy, path
        assert answer.headers["X-Content-Type-Options"] == "nosniff", path
        scripts = re.findall(r"<script>(.*?)</script>", answer.text, re.DOTALL)
        for script in scripts:  # an inline script runs only when its hash is in the policy
            digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
            assert f"'sha256-{digest}'" in policy, path
    assert pages >= 8  # review, admin, playground, docs: by route and as static files


# --- 5. A header value that is not text is a 401, never a 500 --------------------------------

NOT_TEXT = b"Bearer \xe9\xff"


@pytest.fixture(scope="module")
def production() -> Iterator[TestClient]:
    """A production-like app: issuers trusted, public URL, admin and metrics tokens."""
    settings = app_settings(
        auth_disabled=False,
        trusted_issuers={ISSUER: IssuerTrust(jwks=KEYS)},
        public_base_url=BASE,
        admin_token="admin-secret",
        metrics_token="metrics-secret",
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


PROTECTED = [
    ("GET", "/cds-services"),
    ("POST", PATH),
    ("POST", f"{PATH}/feedback"),
    ("GET", "/admin/report"),
    ("GET", "/admin/feedback"),
    ("GET", "/metrics"),
]


@pytest.mark.slow  # builds an app of its own (~1 s)
@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_a_bearer_that_is_not_text_is_401(production: TestClient, method: str, path: str) -> None:
    """The finding: `/metrics` answered 500 to `Authorization: Bearer \\xe9\\xff`."""
    answer = production.request(method, path, json={}, headers={"Authorization": NOT_TEXT})
    assert answer.status_code == 401


@pytest.mark.slow  # builds an app of its own (~1 s)
def test_no_header_value_gives_a_5xx(production: TestClient) -> None:
    headers = ["X-Card-Capability", "X-Request-ID", "Content-Type", "Accept", "Origin", "Cookie"]
    headers += ["X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Authorization"]
    paths = [*_get_paths(production), "/review/card", "/playground/examples/x"]
    requests = [("GET", path) for path in paths] + [("POST", path) for _, path in PROTECTED]
    for name in headers:
        for method, path in requests:
            answer = production.request(method, path, content=b"{}", headers={name: NOT_TEXT})
            assert answer.status_code < 500, (name, method, path)


# --- 6. Record text makes no live link, even with autolinking on ------------------------------


def _autolinking() -> MarkdownIt:
    """CommonMark with raw HTML allowed, linkifying bare URLs, domains and e-mail addresses in the
    parsed text (after escapes are resolved, as remark-gfm's autolink literals do)."""
    renderer = MarkdownIt("commonmark", {"html": True, "linkify": True})
    renderer.core.ruler.disable("linkify")
    renderer.core.ruler.after("text_join", "linkify_text", linkify)
    return renderer


LINKS = "see https://attacker.example/x www.attacker.org attacker.com or help@attacker.com"


def test_record_text_in_a_card_makes_no_link_in_an_autolinking_renderer(triage: Triage) -> None:
    """The finding: a bare URL in a display came out as a live link in the sandbox's renderer.
    Links go into a Condition's display, an Observation's display and a medicine's text."""
    request, _ = load_example("red-flag-spinal-infection-suspected--tacrolimus-raised-crp")
    prefetch = request["prefetch"]
    prefetch["conditions"]["entry"][0]["resource"]["code"]["coding"][0]["display"] = LINKS
    prefetch["observations"]["entry"][0]["resource"]["code"]["coding"][0]["display"] = LINKS
    medication = prefetch["medications"]["entry"][0]["resource"]
    medication["medicationCodeableConcept"]["text"] = f"tacrolimus 1 mg {LINKS}"
    body = HookRequest.model_validate(request)
    (card,) = dump(triage.evaluate(body, "patient-view", EXAMPLE_TODAY))["cards"]
    for renderer in (MarkdownIt("commonmark", {"html": True}), _autolinking()):
        html = renderer.render(card["detail"])
        assert "<a " not in html
        shown = "https[://]attacker[.]example/x www[.]attacker[.]org attacker[.]com"
        assert html.count(f"see {shown} or help[@]attacker[.]com") == 3


@examples(max_examples=300)
@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1))
def test_record_text_made_inert_renders_as_written(text: str) -> None:
    """Every ASCII mark escaped: CommonMark shows printable text as written, none of it markup
    (text that looks like a link is bracketed: the test above)."""
    assume(text.strip() == text and not _LINKLIKE.search(text))
    html = MarkdownIt("commonmark", {"html": True}).render(inert(text))
    assert html.startswith("<p>")
    assert html.endswith("</p>\n")
    shown = html.removeprefix("<p>").removesuffix("</p>\n")
    assert "<" not in shown
    assert html_text.unescape(shown) == text


def test_a_long_word_in_record_text_is_made_inert_in_one_pass() -> None:
    """The finding: the link-like pattern was tried from every character of a word, in time
    quadratic in its length (13 s for 20,000 characters here): one display could hold a worker.
    Now only from a word's start (this test took minutes before, milliseconds now)."""
    word = "a" * 50_000
    assert inert(f"{word} {word}.example") == f"{word} {word}\\[\\.\\]example"
    assert inert(word + "-") == word + "\\-"


def test_the_autolinking_renderer_does_link_bare_urls() -> None:
    """The renderer above is a fair test: it links what a clinician would click."""
    html = _autolinking().render(f"{LINKS} and \\https\\:\\/\\/escaped\\.example")
    assert html.count("<a ") == 5


# --- 4b. The interactive docs run under the policy, in a real browser -------------------------


@pytest.mark.slow  # Chromium, and the app under uvicorn on loopback
def test_the_interactive_docs_start_under_the_policy() -> None:
    """/docs (vendored Swagger UI) draws the API under the same policy as every page: no
    violation is reported on the console."""
    with serving(app_settings()) as url, chromium() as browser:
        page = browser.new_page()
        violations: list[str] = []
        page.on("console", lambda message: violations.append(message.text))
        page.goto(url + "/docs")
        expect(page.locator("#swagger-ui")).to_contain_text("spine-cds")
        assert [v for v in violations if "Content Security Policy" in v] == []
        page.close()
