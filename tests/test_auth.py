"""JWT authentication per CDS Hooks 2.0, with keys served by a JWKS endpoint on loopback."""

import base64
import json
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds_service.app import create_app
from cds_service.auth import Authenticator, IssuerTrust
from cds_service.errors import CDSError
from cds_service.settings import SANDBOX, Settings
from cds_service.urls import within
from tests.conftest import ROOT, app_settings, load_example
from tests.fhir_server import FhirServer, fhir_server

ISSUER = "https://ehr.example.org"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP384R1())
BASE = "http://testserver"
"""The public base URL of the test apps (TestClient's own Host), as production configures it."""
SERVICE = f"{BASE}/cds-services/patient-view"
DATA = ROOT / "tests" / "data"
SANDBOX_JWKS = f"{SANDBOX}/.well-known/jwks.json"


def _jwk(key: Any, kid: str, alg: str) -> dict[str, Any]:
    algorithm = jwt.algorithms.RSAAlgorithm if alg == "RS384" else jwt.algorithms.ECAlgorithm
    jwk: dict[str, Any] = json.loads(algorithm.to_jwk(key.public_key()))
    return {**jwk, "kid": kid, "alg": alg, "use": "sig"}


@pytest.fixture
def jwks() -> Iterator[FhirServer]:
    with fhir_server() as server:
        keys = [_jwk(RSA_KEY, "rsa-1", "RS384"), _jwk(EC_KEY, "ec-1", "ES384")]
        server.routes["jwks.json"] = (200, {"keys": keys})
        yield server


@pytest.fixture
def client(jwks: FhirServer) -> Iterator[TestClient]:
    trust = {ISSUER: IssuerTrust(jku=[f"{jwks.base}/"])}
    settings = app_settings(auth_disabled=False, trusted_issuers=trust, public_base_url=BASE)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def token(jwks: FhirServer, **changes: Any) -> str:
    """A valid RS384 token for the patient-view service, with `changes` to claims or header."""
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": SERVICE, "exp": now + 300, "iat": now, "jti": str(uuid.uuid4())}
    header = {"kid": "rsa-1", "jku": f"{jwks.base}/jwks.json", "typ": "JWT"}
    alg, key = "RS384", RSA_KEY
    for name, value in changes.items():
        if name in ("kid", "jku", "typ"):
            header[name] = value
        elif name == "alg":
            alg = value
        elif name == "key":
            key = value
        elif value is None:
            claims.pop(name)
        else:
            claims[name] = value
    return jwt.encode(claims, key, algorithm=alg, headers=header)


def call(client: TestClient, bearer: str | None) -> Any:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer is not None else {}
    request = load_example("neurology-radiculopathy--seven-weeks")[0]
    return client.post("/cds-services/patient-view", json=request, headers=headers)


def _unsigned(jwks: FhirServer, alg: str) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": SERVICE, "exp": now + 300, "iat": now, "jti": "x"}
    if alg == "none":
        return jwt.encode(claims, "", algorithm="none", headers={"kid": "rsa-1"})
    return jwt.encode(
        claims, "shared-secret-0123456789abcdef0123", algorithm="HS256", headers={"kid": "rsa-1"}
    )


@pytest.mark.slow  # a loopback JWKS server and an app of its own (~1 s)
def test_valid_rs384_token_is_accepted(client: TestClient, jwks: FhirServer) -> None:
    response = call(client, token(jwks))
    assert response.status_code == 200, response.text


@pytest.mark.slow  # a loopback JWKS server and an app of its own (~1 s)
def test_valid_es384_token_is_accepted(client: TestClient, jwks: FhirServer) -> None:
    response = call(client, token(jwks, kid="ec-1", alg="ES384", key=EC_KEY))
    assert response.status_code == 200, response.text


@pytest.mark.slow  # a loopback JWKS server and an app of its own (~1 s)
def test_audience_may_be_a_list(client: TestClient, jwks: FhirServer) -> None:
    assert call(client, token(jwks, aud=["https://other.example", SERVICE])).status_code == 200


@pytest.mark.slow  # a loopback JWKS server and an app of its own (~1 s)
@pytest.mark.parametrize(
    "make",
    [
        lambda j: None,
        lambda j: "garbled.token.value",
        lambda j: _unsigned(j, "none"),
        lambda j: _unsigned(j, "HS256"),
        lambda j: token(j, kid="unknown-kid"),
        lambda j: token(j, iss="https://untrusted.example"),
        lambda j: token(j, aud="http://testserver/cds-services/order-sign"),
        lambda j: token(j, exp=int(time.time()) - 3600),
        lambda j: token(j, iat=int(time.time()) + 3600),
        lambda j: token(j, jti=None),
        lambda j: token(j, jku="https://attacker.example/jwks.json"),
        lambda j: token(j, key=rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        lambda j: token(j, kid="ec-1", alg="ES256", key=ec.generate_private_key(ec.SECP256R1())),
        lambda j: token(j, typ="at+jwt"),
    ],
    ids=[
        "missing",
        "garbled",
        "alg-none",
        "hs256",
        "unknown-kid",
        "wrong-iss",
        "wrong-aud",
        "expired",
        "issued-in-future",
        "no-jti",
        "jku-not-allowed",
        "wrong-signature",
        "es256",
        "typ-not-jwt",
    ],
)
def test_bad_tokens_get_401_without_details(
    client: TestClient, jwks: FhirServer, make: Any
) -> None:
    response = call(client, make(jwks))
    assert response.status_code == 401
    (issue,) = response.json()["issue"]
    assert issue["diagnostics"] == "authentication failed"


def test_replayed_jti_is_refused(client: TestClient, jwks: FhirServer) -> None:
    once = token(jwks)
    assert call(client, once).status_code == 200
    assert call(client, once).status_code == 401


@pytest.mark.slow  # a loopback JWKS server and an app of its own (~1 s)
def test_discovery_and_feedback_need_a_token_too(client: TestClient, jwks: FhirServer) -> None:
    assert client.get("/cds-services").status_code == 401
    discovery = token(jwks, aud="http://testserver/cds-services")
    assert (
        client.get("/cds-services", headers={"Authorization": f"Bearer {discovery}"}).status_code
        == 200
    )
    feedback = client.post("/cds-services/patient-view/feedback", json={"feedback": []})
    assert feedback.status_code == 401
    assert client.get("/health").status_code == 200  # probes stay open


@pytest.mark.slow  # a loopback JWKS server and an app of its own (~1 s)
def test_keys_are_cached(client: TestClient, jwks: FhirServer) -> None:
    for _ in range(3):
        assert call(client, token(jwks)).status_code == 200
    assert [path for path, _ in jwks.requests].count("jwks.json") == 1


@pytest.mark.slow  # a loopback JWKS server and an app of its own (~1 s)
def test_tokens_never_reach_the_log(
    client: TestClient, jwks: FhirServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bad = token(jwks, aud="http://wrong.example")
    assert call(client, bad).status_code == 401
    assert "JWT refused" in caplog.text
    assert bad not in caplog.text
    assert bad.split(".")[1] not in caplog.text


@pytest.mark.slow  # a loopback JWKS server and an app of its own (~1 s)
def test_public_base_url_sets_the_audience(jwks: FhirServer) -> None:
    trust = {ISSUER: IssuerTrust(jku=[f"{jwks.base}/"])}
    settings = app_settings(
        auth_disabled=False, trusted_issuers=trust, public_base_url="https://cds.example.org/"
    )
    with TestClient(create_app(settings)) as proxied:
        public = token(jwks, aud="https://cds.example.org/cds-services/patient-view")
        assert call(proxied, public).status_code == 200
        assert call(proxied, token(jwks)).status_code == 401


def _sandbox_token(audience: str) -> tuple[str, dict[str, Any]]:
    """A token as the CDS Hooks sandbox signs it, with the key its public repository publishes
    (tests/data, from cds-hooks/sandbox keys/ecprivkey.pem): anyone can make one."""
    key = (DATA / "cds-hooks-sandbox-key.pem").read_bytes()
    jwks: dict[str, Any] = json.loads((DATA / "cds-hooks-sandbox-jwks.json").read_text())
    now = int(time.time())
    claims = {"iss": SANDBOX, "aud": audience, "exp": now + 300, "iat": now, "jti": "sandbox"}
    header = {"typ": "JWT", "kid": jwks["keys"][0]["kid"], "jku": SANDBOX_JWKS}
    return jwt.encode(claims, key, algorithm="ES384", headers=header), jwks


@pytest.mark.slow  # builds an app of its own (~1 s)
def test_a_default_deployment_trusts_no_issuer() -> None:
    assert Settings().issuers() == {}
    forged, _ = _sandbox_token(SERVICE)
    with TestClient(create_app(app_settings(auth_disabled=False))) as default:
        assert call(default, forged).status_code == 401
        assert default.get("/cds-services").status_code == 401


def test_trusting_the_sandbox_is_an_explicit_opt_in() -> None:
    """The sandbox's JWKS is served from the committed copy (no internet here): a stand-in for
    the network only; the verification is the service's own."""
    forged, jwks = _sandbox_token(SERVICE)

    async def sandbox_jwks(url: str) -> dict[str, Any]:
        assert url == SANDBOX_JWKS
        return jwks

    def verify(settings: Settings) -> dict[str, Any]:
        issuers = settings.issuers()
        authenticator = Authenticator(issuers, 30, lambda *_: True, BASE, sandbox_jwks)
        return anyio.run(authenticator.verify, f"Bearer {forged}", "/cds-services/patient-view")

    with pytest.raises(CDSError):
        verify(Settings())
    assert verify(Settings(trust_sandbox=True))["iss"] == SANDBOX


@pytest.mark.slow  # builds an app of its own (~1 s)
def test_trusting_the_sandbox_is_logged_as_insecure(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    settings = app_settings(auth_disabled=False, trust_sandbox=True, public_base_url=BASE)
    with TestClient(create_app(settings)):
        pass
    assert "INSECURE: trusting the public CDS Hooks sandbox" in caplog.text


@pytest.mark.slow  # builds an app of its own (~1 s)
def test_no_issuer_logs_how_to_configure_one(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    with TestClient(create_app(app_settings(auth_disabled=False))):
        pass
    assert "CDS_TRUSTED_ISSUERS" in caplog.text


@pytest.mark.slow  # a loopback JWKS server and an app of its own (~1 s)
def test_an_algorithm_that_does_not_fit_the_key_is_401(
    client: TestClient, jwks: FhirServer
) -> None:
    """RS384 against the EC key `ec-1`, junk signature: no key is needed to try it."""
    header = {"alg": "RS384", "typ": "JWT", "kid": "ec-1", "jku": f"{jwks.base}/jwks.json"}
    claims = {"iss": ISSUER, "aud": SERVICE, "exp": int(time.time()) + 300}
    forged = ".".join(
        base64.urlsafe_b64encode(json.dumps(part).encode()).decode().rstrip("=")
        for part in (header, claims)
    )
    assert call(client, forged + ".AAAA").status_code == 401


@pytest.mark.parametrize(
    ("jku", "allowed"),
    [
        ("https://ehr.test/keys/jwks.json", True),
        ("https://ehr.test:443/keys/jwks.json", True),
        ("https://ehr.test/keys-evil/jwks.json", False),
        ("https://ehr.test.evil.example/keys/jwks.json", False),
        ("https://ehr.test@evil.example/keys/jwks.json", False),
        ("https://evil.example/https://ehr.test/keys/", False),
        ("http://ehr.test/keys/jwks.json", False),
        ("https://ehr.test:8443/keys/jwks.json", False),
        ("https://ehr.test:99999/keys/jwks.json", False),
    ],
)
def test_jku_is_compared_by_url_parts_not_string_prefix(jku: str, allowed: bool) -> None:
    assert (within(jku, "https://ehr.test/keys") is not None) is allowed


@pytest.fixture(scope="module")
def fuzz_client() -> TestClient:
    """An app that trusts an issuer whose keys cannot be fetched (built when first used)."""
    trust = {ISSUER: IssuerTrust(jwks_url="http://127.0.0.1:9/jwks.json")}
    settings = app_settings(auth_disabled=False, trusted_issuers=trust, public_base_url=BASE)
    return TestClient(create_app(settings))


@pytest.mark.slow  # 300 generated tokens, three requests each
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    authorization=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=200),
    header=st.dictionaries(
        st.sampled_from(["alg", "kid", "jku", "typ"]),
        st.sampled_from(["RS384", "ES384", "none", "HS256", "JWT", "ec-1"])
        | st.text(max_size=30)
        | st.integers()
        | st.none()
        | st.booleans(),
    ),
    claims=st.dictionaries(st.text(max_size=5), st.text(max_size=20) | st.integers()),
)
def test_any_header_or_token_gets_200_or_401(
    fuzz_client: TestClient, authorization: str, header: dict[str, Any], claims: dict[str, Any]
) -> None:
    forged = ".".join(
        base64.urlsafe_b64encode(json.dumps(part).encode()).decode().rstrip("=")
        for part in (header, claims)
    )
    for value in (authorization, f"Bearer {forged}.AAAA", f"Bearer {forged}"):
        response = fuzz_client.post(
            "/cds-services/patient-view", json={}, headers={"Authorization": value}
        )
        assert response.status_code == 401


@pytest.mark.slow  # a loopback JWKS server and an app of its own (~1 s)
def test_replay_is_refused_across_workers_sharing_the_store(jwks: FhirServer) -> None:
    trust = {ISSUER: IssuerTrust(jku=[f"{jwks.base}/"])}
    settings = app_settings(auth_disabled=False, trusted_issuers=trust, public_base_url=BASE)
    once = token(jwks)
    with TestClient(create_app(settings)) as first, TestClient(create_app(settings)) as second:
        assert call(first, once).status_code == 200
        assert call(second, once).status_code == 401
