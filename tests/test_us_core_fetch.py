"""Against a server that answers only US Core's SHALL searches, a call without prefetch gets the
cards a full prefetch gives (tests/us_core_server.py: a stand-in for an EHR)."""

import copy
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from fastapi.testclient import TestClient

from cds_service.app import create_app
from cds_service.knowledge import load_knowledge
from cds_service.models import HookRequest, dump
from cds_service.queries import PATIENT, queries
from cds_service.triage import Triage
from tests.conftest import EXAMPLE_TODAY, ROOT, app_settings, example_names, load_example
from tests.fhir_server import FhirServer
from tests.synthea.convert import summarise
from tests.us_core_server import SHALL, Record, us_core_server

pytestmark = pytest.mark.slow  # a loopback FHIR server and an app


@pytest.fixture(scope="module")
def record() -> Record:
    return Record()


@pytest.fixture(scope="module")
def server(record: Record) -> Iterator[FhirServer]:
    with us_core_server(record) as running:
        yield running


@pytest.fixture(scope="module")
def app_client(server: FhirServer) -> Iterator[TestClient]:
    settings = app_settings(fhir_servers=[server.base], fhir_allow_private=True)
    with TestClient(create_app(settings)) as client:
        yield client


def _shape(template: str) -> tuple[str, frozenset[str]]:
    kind, _, query = template.partition("?")
    names = {name for name, _ in parse_qsl(query)} - {"_include", "_count"}
    return kind, frozenset(names)


def test_every_template_in_discovery_is_a_us_core_shall_search(app_client: TestClient) -> None:
    for service in app_client.get("/cds-services").json()["services"]:
        for key, template in service["prefetch"].items():
            kind, names = _shape(template)
            if not names:
                assert template == f"Patient/{PATIENT}", key  # a read by id
            else:
                assert names in SHALL[kind], f"{key}: {template}"


def _resources(prefetch: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for value in prefetch.values():
        if value.get("resourceType") == "Bundle":
            found += [entry["resource"] for entry in value.get("entry", [])]
        else:
            found.append(value)
    return found


def _equivalent(prefetch: dict[str, Any]) -> bool:
    """A prefetch a server can stand for: no key sent as null or an OperationOutcome (the
    client had no data, or could not get it), no first page only, nothing outside US Core, no
    reference that only a Bundle can resolve (`urn:uuid:`)."""
    bundled = "urn:uuid:" in json.dumps(prefetch)
    return (
        not bundled
        and "statements" not in prefetch
        and all(
            isinstance(value, dict)
            and value.get("resourceType") != "OperationOutcome"
            and not value.get("link")
            for value in prefetch.values()
        )
    )


EQUIVALENT = [name for name in example_names() if _equivalent(load_example(name)[0]["prefetch"])]


def test_most_examples_have_a_server_equivalent() -> None:
    assert len(EQUIVALENT) >= 0.9 * len(example_names())


def _without_prefetch(request: dict[str, Any], server: FhirServer) -> dict[str, Any]:
    request = copy.deepcopy(request)
    del request["prefetch"]
    request["fhirServer"] = server.base
    request["fhirAuthorization"] = {
        "access_token": "t",
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "spine-cds",
    }
    return request


@pytest.mark.parametrize("name", EQUIVALENT)
def test_no_prefetch_gives_the_cards_of_a_full_prefetch(
    name: str, record: Record, server: FhirServer, app_client: TestClient, triage: Triage
) -> None:
    request, _ = load_example(name)
    record.resources, record.refused = _resources(request["prefetch"]), []
    body = HookRequest.model_validate(request)
    full = dump(triage.evaluate(body, request["hook"], EXAMPLE_TODAY))
    response = app_client.post(
        f"/cds-services/{request['hook']}", json=_without_prefetch(request, server)
    )
    assert response.status_code == 200, response.text
    assert _cards(response.json()) == _cards(full)
    assert record.refused == []


def _cards(response: dict[str, Any]) -> list[dict[str, Any]]:
    """The cards as the examples summarise them, evidence as a set: a server returns each
    search's results in an order of its own."""
    return [
        {**summary, "reasons": sorted(summary.get("reasons", []))}
        for summary in map(summarise, response["cards"])
    ]


def test_medicines_by_reference_are_read_when_the_server_ignores_include(
    record: Record, server: FhirServer, app_client: TestClient
) -> None:
    request, expected = load_example(
        "pain-management-long-term-opioids--oxycodone-by-medication-reference"
    )
    record.resources, record.include = _resources(request["prefetch"]), False
    try:
        response = app_client.post(
            "/cds-services/patient-view", json=_without_prefetch(request, server)
        )
    finally:
        record.include = True
    assert response.status_code == 200, response.text
    rules = [c["extension"]["org.spine-cds.rule"]["id"] for c in response.json()["cards"]]
    assert rules == [card["rule"] for card in expected["cards"]]
    assert "Medication/med-oxycodone" in [path for path, _ in server.requests]


def test_a_rule_reading_a_new_category_adds_a_key(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    before = queries(load_knowledge(rules))
    (rules / "valuesets" / "gait-speed.yaml").write_text(
        "concept: gait-speed\ntitle: Gait speed\nfact: observation\ncategory: activity\n"
        "unit: m/s\nunits:\n  m/s: {}\n"
        "sources:\n  own: {title: t, url: 'https://x', version: '1'}\n"
        "codes:\n  - {system: spine-cds, code: gait-speed, display: Gait speed, source: own}\n"
    )
    (rules / "config.yaml").write_text(
        (rules / "config.yaml").read_text().replace("  inr: 30\n", "  inr: 30\n  gait-speed: 14\n")
    )
    (rules / "rules" / "red-flag-slow-gait.yaml").write_text(
        "id: red-flag-slow-gait\nversion: 1.0.0\ntitle: t\nguideline: ahcpr-1994\n"
        "hooks: [patient-view]\nwhen: w\nthen: t\nmatch:\n"
        "  - [{observation: gait-speed, value: {lt: 0.5}}]\nderive: [red-flag]\n"
    )
    after = queries(load_knowledge(rules))
    assert "observations-activity" not in before.templates
    assert (
        after.templates["observations-activity"]
        == f"Observation?patient={PATIENT}&category=activity"
    )
    assert "observations-activity" in after.required  # it feeds a red flag
    assert after.windows["observations-activity"] == 14
    assert "observations-survey" not in after.required  # STarT Back and Oswestry: referrals
