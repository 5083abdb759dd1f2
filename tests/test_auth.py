"""JWT authentication per CDS Hooks 2.0, with keys served by a JWKS endpoint on loopback."""

import json
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient

from cds_service.app import create_app
from cds_service.auth import IssuerTrust
from tests.conftest import app_settings, load_example
from tests.fhir_server import FhirServer, fhir_server

ISSUER = "https://ehr.example.org"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP384R1())
SERVICE = "http://testserver/cds-services/patient-view"


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
    settings = app_settings(auth_disabled=False, trusted_issuers=trust)
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


def test_valid_rs384_token_is_accepted(client: TestClient, jwks: FhirServer) -> None:
    response = call(client, token(jwks))
    assert response.status_code == 200, response.text


def test_valid_es384_token_is_accepted(client: TestClient, jwks: FhirServer) -> None:
    response = call(client, token(jwks, kid="ec-1", alg="ES384", key=EC_KEY))
    assert response.status_code == 200, response.text


def test_audience_may_be_a_list(client: TestClient, jwks: FhirServer) -> None:
    assert call(client, token(jwks, aud=["https://other.example", SERVICE])).status_code == 200


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


def test_keys_are_cached(client: TestClient, jwks: FhirServer) -> None:
    for _ in range(3):
        assert call(client, token(jwks)).status_code == 200
    assert [path for path, _ in jwks.requests].count("jwks.json") == 1


def test_tokens_never_reach_the_log(
    client: TestClient, jwks: FhirServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bad = token(jwks, aud="http://wrong.example")
    assert call(client, bad).status_code == 401
    assert "JWT refused" in caplog.text
    assert bad not in caplog.text
    assert bad.split(".")[1] not in caplog.text


def test_public_base_url_sets_the_audience(jwks: FhirServer) -> None:
    trust = {ISSUER: IssuerTrust(jku=[f"{jwks.base}/"])}
    settings = app_settings(
        auth_disabled=False, trusted_issuers=trust, public_base_url="https://cds.example.org/"
    )
    with TestClient(create_app(settings)) as proxied:
        public = token(jwks, aud="https://cds.example.org/cds-services/patient-view")
        assert call(proxied, public).status_code == 200
        assert call(proxied, token(jwks)).status_code == 401


def test_sandbox_is_trusted_by_default() -> None:
    from cds_service.settings import Settings

    trust = Settings().trusted_issuers["https://sandbox.cds-hooks.org"]
    assert trust.jku == ["https://sandbox.cds-hooks.org/.well-known/jwks.json"]


def test_replay_is_refused_across_workers_sharing_the_store(jwks: FhirServer) -> None:
    trust = {ISSUER: IssuerTrust(jku=[f"{jwks.base}/"])}
    settings = app_settings(auth_disabled=False, trusted_issuers=trust)
    once = token(jwks)
    with TestClient(create_app(settings)) as first, TestClient(create_app(settings)) as second:
        assert call(first, once).status_code == 200
        assert call(second, once).status_code == 401
