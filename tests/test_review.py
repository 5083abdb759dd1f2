"""The referral-review page reads an issued card only with the capability its SMART link holds."""

import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cds_service.app import create_app
from tests.conftest import app_settings, load_example

EXAMPLE = "neurology-radiculopathy--seven-weeks"


def _link(client: TestClient) -> dict[str, Any]:
    response = client.post("/cds-services/patient-view", json=load_example(EXAMPLE)[0])
    (card,) = response.json()["cards"]
    (link,) = card["links"]
    return {"card": card, "capability": link["appContext"]}


def _review(client: TestClient, capability: str | None) -> Any:
    headers = {"X-Card-Capability": capability} if capability is not None else {}
    return client.get("/review/card", headers=headers)


def test_the_link_capability_opens_its_card(client: TestClient) -> None:
    issued = _link(client)
    response = _review(client, issued["capability"])
    assert response.status_code == 200
    assert response.json()["uuid"] == issued["card"]["uuid"]
    assert response.headers["Cache-Control"] == "no-store"


def test_the_card_uuid_alone_or_a_wrong_secret_opens_nothing(client: TestClient) -> None:
    uuid = _link(client)["card"]["uuid"]
    for capability in (uuid, f"{uuid}.", f"{uuid}.not-the-secret", "x" * 50):
        assert _review(client, capability).status_code == 404
    assert _review(client, None).status_code == 400
    assert client.get(f"/review/cards/{uuid}").status_code == 404  # no card by URL any more


@pytest.mark.slow  # builds an app of its own (~1 s)
def test_a_capability_expires() -> None:
    with TestClient(create_app(app_settings(review_ttl_hours=0))) as expired:
        assert _review(expired, _link(expired)["capability"]).status_code == 404


def test_the_capability_never_reaches_the_log(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    capability = _link(client)["capability"]
    assert _review(client, capability).status_code == 200
    secret = capability.partition(".")[2]
    assert secret not in caplog.text


def test_the_store_keeps_a_hash_of_the_secret_not_the_secret(client: TestClient) -> None:
    capability = _link(client)["capability"]
    stored = _review(client, capability).json()
    assert capability.partition(".")[2] not in str(stored)
