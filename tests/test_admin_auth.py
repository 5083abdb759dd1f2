"""The committee's API has its own credential: CDS client JWTs and anonymous calls get 401."""

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from cds_service.app import create_app
from cds_service.auth import IssuerTrust
from tests.conftest import app_settings
from tests.fhir_server import FhirServer
from tests.test_auth import BASE, ISSUER, SERVICE, call, jwks, token  # noqa: F401 (jwks: a fixture)

ADMIN_TOKEN = "committee-secret"
ENDPOINTS = ["/admin/report", "/admin/feedback"]


@pytest.fixture
def client(jwks: FhirServer) -> Iterator[TestClient]:  # noqa: F811
    trust = {ISSUER: IssuerTrust(jku=[f"{jwks.base}/"])}
    settings = app_settings(
        auth_disabled=False, trusted_issuers=trust, admin_token=ADMIN_TOKEN, public_base_url=BASE
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.mark.parametrize("path", ENDPOINTS)
def test_a_cds_client_jwt_is_refused(client: TestClient, jwks: FhirServer, path: str) -> None:  # noqa: F811
    assert call(client, token(jwks)).status_code == 200  # the JWT is good for CDS Hooks...
    for audience in (SERVICE, f"http://testserver{path}"):
        bearer = f"Bearer {token(jwks, aud=audience)}"
        answer = client.get(path, headers={"Authorization": bearer})
        assert answer.status_code == 401  # ...and worth nothing here
        assert answer.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("authorization", [None, "Bearer ", "Bearer wrong", f"Basic {ADMIN_TOKEN}"])
def test_anonymous_and_wrong_credentials_are_refused(
    client: TestClient, path: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    assert client.get(path, headers=headers).status_code == 401


@pytest.mark.parametrize("path", ENDPOINTS)
def test_the_admin_token_opens_them(client: TestClient, path: str) -> None:
    answer = client.get(path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert answer.status_code == 200


def test_without_a_configured_token_nothing_opens_them() -> None:
    with TestClient(create_app(app_settings())) as client:
        for token_ in ("", "None", "null"):
            answer = client.get("/admin/report", headers={"Authorization": f"Bearer {token_}"})
            assert answer.status_code == 401
