"""CDS Hooks 2.0 response rules, checked on every example's response over HTTP."""

import re
from datetime import date
from typing import Any

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.servicerequest import ServiceRequest
from hypothesis import given, settings
from hypothesis import strategies as st

from cds_service.cards import service_request
from cds_service.facts import Evidence
from cds_service.knowledge import Knowledge, Referral
from tests.conftest import example_names, load_example

TOKEN = re.compile(r"\{\{([^}]*)\}\}")


def _no_null_or_empty(value: Any, path: str = "") -> list[str]:
    """Paths of members that are null or empty ("OPTIONAL ... MUST omit it", §Use of JSON)."""
    if value is None or value in ("", [], {}):
        return [path]
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in _no_null_or_empty(item, f"{path}.{key}")]
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _no_null_or_empty(item, f"{path}[{i}]")]
    return []


def test_discovery_conforms(client: TestClient) -> None:
    body = client.get("/cds-services").json()
    assert _no_null_or_empty(body) == []
    ids = [service["id"] for service in body["services"]]
    assert len(ids) == len(set(ids))
    for service in body["services"]:
        assert {"hook", "description", "id"} <= service.keys()
        for template in service["prefetch"].values():
            assert TOKEN.findall(template) == ["context.patientId"]  # first-level context only


@pytest.mark.parametrize("name", example_names())
def test_cards_conform(client: TestClient, name: str) -> None:
    request, _ = load_example(name)
    body = client.post(f"/cds-services/{request['hook']}", json=request).json()
    assert set(body) <= {"cards", "systemActions", "extension"}
    if body["cards"]:  # nothing to say is exactly {"cards": []}
        assert _no_null_or_empty(body["cards"]) == []
    actions = body.get("systemActions")
    if actions is not None:  # §System Action: Actions the client may apply without showing them
        assert _no_null_or_empty(actions) == []
        for action in actions:
            assert action["type"] == "update"
            assert action["description"]
            ServiceRequest.model_validate(action["resource"])
        # repeated where the sandbox reads them (docs/sandbox.md), and only with them
        assert body["extension"] == {"systemActions": actions}
    else:
        assert "extension" not in body
    uuids: list[str] = []
    for card in body["cards"]:
        assert len(card["summary"]) < 140
        assert card["indicator"] in ("info", "warning", "critical")
        assert card["source"]["label"]
        assert card["detail"]
        uuids.append(card["uuid"])
        for reason in card.get("overrideReasons", []):
            assert reason["display"]
        if "suggestions" in card:
            assert card["selectionBehavior"] in ("at-most-one", "any")
        else:
            assert "selectionBehavior" not in card
        for suggestion in card.get("suggestions", []):
            assert suggestion["label"]
            uuids.append(suggestion["uuid"])
            assert suggestion["actions"]
            for action in suggestion["actions"]:
                assert action["type"] in ("create", "update", "delete")
                assert action["description"]
                if action["type"] == "delete":
                    assert re.fullmatch(r"[A-Za-z]+/[A-Za-z0-9\-.]{1,64}", action["resourceId"])
                else:
                    ServiceRequest.model_validate(action["resource"])
                    assert action["resource"]["status"] == "draft"
        assert isinstance(card["extension"], dict)
    assert len(uuids) == len(set(uuids))


@pytest.mark.slow  # 150 generated referrals, each validated with fhir.resources
@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    priority=st.sampled_from(["routine", "urgent", "stat"]),
    patient=st.from_regex(r"[A-Za-z0-9\-.]{1,64}", fullmatch=True),
    references=st.lists(
        st.from_regex(r"(Condition|Observation)/[A-Za-z0-9\-.]{1,64}", fullmatch=True)
        | st.from_regex(r"urn:uuid:\S{1,60}", fullmatch=True),
        max_size=4,
    ),
    replaced=st.lists(st.from_regex(r"ServiceRequest/[A-Za-z0-9\-.]{1,64}", fullmatch=True)),
)
def test_every_referral_the_service_builds_is_a_valid_r4_service_request(
    knowledge: Knowledge,
    data: st.DataObject,
    priority: str,
    patient: str,
    references: list[str],
    replaced: list[str],
) -> None:
    """What each request no longer validates: any referral, any checked ids from the record."""
    specialty = data.draw(st.sampled_from(sorted(knowledge.specialties)))
    evidence = [Evidence("Condition", ref, "x", "", "") for ref in references]
    resource = service_request(
        knowledge,
        Referral(specialty=specialty, priority=priority),
        patient,
        date(2026, 11, 1),
        "Refer.",
        evidence,
        replaced,
    )
    ServiceRequest.model_validate(resource)
