"""Missing prefetch is fetched from the client's fhirServer (a real HTTP server on loopback)."""

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cds_service.app import create_app
from cds_service.knowledge import load_knowledge
from cds_service.queries import queries
from tests.conftest import EXAMPLE_TODAY, app_settings, load_example
from tests.fhir_server import FhirServer, fhir_server

EXAMPLE = "red-flag-spinal-infection--fever-ivdu-markers"
PATIENT = "pt-infection-ivdu"
TOKEN = "secret-access-token"
QUERIES = queries(load_knowledge())
OBSERVATION_KEYS = tuple(k for k in QUERIES.templates if k.startswith("observations-"))

# Each test runs a loopback FHIR server and builds an app of its own (~1 s).
pytestmark = pytest.mark.slow


@pytest.fixture
def server() -> Iterator[FhirServer]:
    with fhir_server() as running:
        yield running


DISCARD = "http://127.0.0.1:9/fhir"  # nothing listens on the discard port


@pytest.fixture
def app_client(server: FhirServer) -> Iterator[TestClient]:
    settings = app_settings(
        fhir_servers=[server.base, DISCARD],
        fhir_allow_private=True,  # the test FHIR server is on loopback
        fhir_timeout_seconds=2,
        fhir_max_pages=3,
    )
    with TestClient(create_app(settings)) as client:
        yield client


def _request(server: FhirServer, drop: tuple[str, ...]) -> dict[str, Any]:
    request = copy.deepcopy(load_example(EXAMPLE)[0])
    for key in drop:
        del request["prefetch"][key]
    request["fhirServer"] = server.base
    request["fhirAuthorization"] = {
        "access_token": TOKEN,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "spine-cds",
    }
    return request


def _search(key: str) -> str:
    """The path the service asks the fhirServer for `key` (a US Core search shape)."""
    return QUERIES.search(key, PATIENT, EXAMPLE_TODAY)


def _category(observation: dict[str, Any]) -> str:
    return str(observation["category"][0]["coding"][0]["code"])


def _serve_record(server: FhirServer, pages: int = 2) -> None:
    """The example's prefetch at the paths the service searches, each Observation category's
    results split over `pages` search pages."""
    prefetch = load_example(EXAMPLE)[0]["prefetch"]
    server.routes[_search("patient")] = (200, prefetch["patient"])
    server.routes[_search("conditions")] = (200, prefetch["conditions"])
    for key in [k for k in QUERIES.templates if k.startswith("observations-")]:
        category = key.removeprefix("observations-")
        entries = [
            e for e in prefetch["observations"]["entry"] if _category(e["resource"]) == category
        ]
        for page in range(pages):
            bundle: dict[str, Any] = {
                "resourceType": "Bundle",
                "type": "searchset",
                "entry": entries[page::pages],
            }
            if page + 1 < pages:
                following = f"Observation?category={category}&page={page + 1}"
                bundle["link"] = [{"relation": "next", "url": f"{server.base}/{following}"}]
            path = _search(key) if page == 0 else f"Observation?category={category}&page={page}"
            server.routes[path] = (200, bundle)
    for key in ("procedures", "medications", "referrals"):
        server.routes[_search(key)] = (200, {"resourceType": "Bundle", "type": "searchset"})


def _rules(response: Any) -> list[str]:
    return [c["extension"]["org.spine-cds.rule"]["id"] for c in response.json()["cards"]]


def test_missing_prefetch_is_fetched_with_the_token_and_pages_followed(
    server: FhirServer, app_client: TestClient
) -> None:
    _serve_record(server, pages=3)
    request = _request(server, drop=("patient", "conditions", "observations"))
    response = app_client.post("/cds-services/patient-view", json=request)
    assert response.status_code == 200, response.text
    assert _rules(response) == ["red-flag-spinal-infection"]  # needs all three observations
    paths = [path for path, _ in server.requests]
    assert "Observation?category=laboratory&page=2" in paths
    assert {auth for _, auth in server.requests} == {f"Bearer {TOKEN}"}


def test_null_prefetch_is_no_data_and_not_fetched(
    server: FhirServer, app_client: TestClient
) -> None:
    """CDS Hooks 2.0.1: a key sent as null means the client has no data for it."""
    _serve_record(server)
    request = _request(server, drop=())
    request["prefetch"]["conditions"] = None
    response = app_client.post("/cds-services/patient-view", json=request)
    assert response.status_code == 200, response.text
    assert _rules(response) == []  # no Condition, so no back pain and no red flag
    assert not [p for p, _ in server.requests if p.startswith("Condition")]


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (500, {"resourceType": "OperationOutcome"}, "HTTP 500"),
        (401, {}, "HTTP 401"),
        (200, {"resourceType": "OperationOutcome", "issue": []}, "OperationOutcome"),
    ],
)
def test_required_data_that_cannot_be_fetched_is_412(
    server: FhirServer, app_client: TestClient, status: int, body: Any, reason: str
) -> None:
    _serve_record(server)
    server.routes[_search("conditions")] = (status, body)
    request = _request(server, drop=("conditions",))
    response = app_client.post("/cds-services/patient-view", json=request)
    assert response.status_code == 412
    (issue,) = response.json()["issue"]
    assert issue["expression"] == ["prefetch.conditions"]
    assert f"could not fetch Condition?patient={PATIENT}&_count=" in issue["diagnostics"]
    assert reason not in issue["diagnostics"]  # nothing of the upstream answer is repeated
    assert TOKEN not in response.text


def test_too_many_pages_is_412(server: FhirServer, app_client: TestClient) -> None:
    _serve_record(server, pages=5)  # the app follows at most 3
    response = app_client.post(
        "/cds-services/patient-view", json=_request(server, drop=("observations",))
    )
    assert response.status_code == 412
    assert "pages" in response.json()["issue"][0]["diagnostics"]


def test_next_link_to_another_host_is_refused(server: FhirServer, app_client: TestClient) -> None:
    _serve_record(server, pages=2)
    bundle = server.routes[_search("observations-laboratory")][1]
    bundle["link"] = [{"relation": "next", "url": "http://127.0.0.2:9/steal-token"}]
    response = app_client.post(
        "/cds-services/patient-view", json=_request(server, drop=("observations",))
    )
    assert response.status_code == 412
    assert "away from fhirServer" in response.json()["issue"][0]["diagnostics"]


def test_unreachable_server_is_412(app_client: TestClient) -> None:
    request = copy.deepcopy(load_example(EXAMPLE)[0])
    del request["prefetch"]["patient"]
    request["fhirServer"] = DISCARD
    response = app_client.post("/cds-services/patient-view", json=request)
    assert response.status_code == 412
    assert response.json()["issue"][0]["expression"] == ["prefetch.patient"]


def test_optional_prefetch_that_fails_is_skipped(
    server: FhirServer, app_client: TestClient
) -> None:
    _serve_record(server)
    server.routes[_search("procedures")] = (500, {})
    response = app_client.post("/cds-services/patient-view", json=_request(server, drop=()))
    assert response.status_code == 200
    assert _rules(response) == ["red-flag-spinal-infection"]


def test_fhir_server_not_allowed_is_412_without_a_request(
    server: FhirServer, app_client: TestClient
) -> None:
    _serve_record(server)
    request = _request(server, drop=("conditions",))
    request["fhirServer"] = server.base.replace("127.0.0.1", "localhost")
    response = app_client.post("/cds-services/patient-view", json=request)
    assert response.status_code == 412
    assert "not one this caller may send" in response.json()["issue"][0]["diagnostics"]
    assert server.requests == []


@pytest.mark.parametrize(
    "prefix_trick",
    ["{base}.evil.example/", "{scheme}://user@{host}:{port}/", "{base}-other/"],
)
def test_fhir_server_prefix_tricks_are_refused(server: FhirServer, prefix_trick: str) -> None:
    allowed = f"{server.base}/fhir"
    settings = app_settings(fhir_servers=[allowed], fhir_allow_private=True)
    scheme, _, hostport = server.base.partition("://")
    host, _, port = hostport.partition(":")
    target = prefix_trick.format(base=allowed, scheme=scheme, host=host, port=port)
    request = _request(server, drop=("conditions",))
    request["fhirServer"] = target
    with TestClient(create_app(settings)) as client:
        response = client.post("/cds-services/patient-view", json=request)
    assert response.status_code == 412
    assert server.requests == []


def test_loopback_fhir_server_is_refused_unless_allowed(server: FhirServer) -> None:
    _serve_record(server)
    settings = app_settings(fhir_servers=[server.base])  # allowed, but on loopback
    with TestClient(create_app(settings)) as client:
        response = client.post(
            "/cds-services/patient-view", json=_request(server, drop=("conditions",))
        )
    assert response.status_code == 412
    assert "loopback, private or link-local" in response.json()["issue"][0]["diagnostics"]
    assert server.requests == []


def test_an_unsafe_patient_id_is_400_before_any_fetch(
    server: FhirServer, app_client: TestClient
) -> None:
    request = _request(server, drop=("conditions",))
    request["context"]["patientId"] = "../../admin"
    response = app_client.post("/cds-services/patient-view", json=request)
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["context.patientId"]
    assert server.requests == []


def _first_page_sent(server: FhirServer) -> dict[str, Any]:
    """The example with its Observations sent by category, the laboratory results as the first
    of two pages (a `next` link)."""
    _serve_record(server, pages=2)
    request = _request(server, drop=("observations",))
    for key in OBSERVATION_KEYS:
        request["prefetch"][key] = server.routes[_search(key)][1]
    request["prefetch"]["observations-vital-signs"]["link"] = []  # that one is whole
    return request


def test_a_sent_first_page_is_completed_from_the_fhir_server(
    server: FhirServer, app_client: TestClient
) -> None:
    response = app_client.post("/cds-services/patient-view", json=_first_page_sent(server))
    assert response.status_code == 200, response.text
    assert "Observation?category=laboratory&page=1" in [path for path, _ in server.requests]
    assert _rules(response) == ["red-flag-spinal-infection"]
    assert all("Partial record" not in c["detail"] for c in response.json()["cards"])


def test_a_sent_first_page_that_cannot_be_completed_is_flagged_partial(
    server: FhirServer, app_client: TestClient
) -> None:
    request = _first_page_sent(server)
    del server.routes["Observation?category=laboratory&page=1"]  # now a 404
    response = app_client.post("/cds-services/patient-view", json=request)
    assert response.status_code == 200, response.text
    cards = response.json()["cards"]
    assert cards, "the first page still holds the evidence of a red flag"
    assert all("Partial record" in c["detail"] for c in cards)


@pytest.mark.parametrize(
    "answer",
    [
        {"resourceType": "Bundle", "type": "searchset", "entry": 5},
        {"resourceType": "Bundle", "type": "searchset", "entry": None},
        {"resourceType": "Bundle", "type": "searchset", "link": 5, "entry": []},
        b"[" * 100_000 + b"]" * 100_000,
        b'{"resourceType": "Bundle", "entry": [{"resource": {"id": "\\ud800"}}]}',
        [1, 2, 3],
    ],
    ids=["entry-number", "entry-null", "link-number", "deep", "surrogate", "array"],
)
def test_a_malformed_fhir_server_answer_is_412_never_500(
    server: FhirServer, app_client: TestClient, answer: Any
) -> None:
    _serve_record(server)
    server.routes[_search("conditions")] = (200, answer)
    response = app_client.post(
        "/cds-services/patient-view", json=_request(server, drop=("conditions",))
    )
    assert response.status_code in (200, 400, 412), response.text  # an answer, never a 5xx


def test_a_trickling_fhir_server_costs_one_deadline_for_all_keys(server: FhirServer) -> None:
    """Each read is within the per-read timeout, but the whole answer never comes: every key
    is cut at one deadline for the request, not a timeout per key."""
    _serve_record(server)
    for key in ("patient", "conditions", *OBSERVATION_KEYS):
        server.trickle[_search(key)] = 0.2
    settings = app_settings(
        fhir_servers=[server.base], fhir_allow_private=True, fhir_deadline_seconds=1
    )
    request = _request(server, drop=("patient", "conditions", "observations"))
    with TestClient(create_app(settings)) as client:
        response = client.post("/cds-services/patient-view", json=request)
    assert response.status_code == 412
    issues = response.json()["issue"]
    # every required key, and no optional one (survey, exam, social-history): no issue
    assert {tuple(issue["expression"]) for issue in issues} == {
        (f"prefetch.{key}",) for key in QUERIES.required
    }
    assert ("prefetch.observations-laboratory",) in {tuple(i["expression"]) for i in issues}
    assert all("deadline" in issue["diagnostics"] for issue in issues)


def test_an_answer_over_the_size_limit_is_not_read(server: FhirServer) -> None:
    _serve_record(server)
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": [], "pad": "x" * 5000}
    server.routes[_search("conditions")] = (200, bundle)
    settings = app_settings(
        fhir_servers=[server.base], fhir_allow_private=True, fhir_max_answer_bytes=4000
    )
    with TestClient(create_app(settings)) as client:
        response = client.post(
            "/cds-services/patient-view", json=_request(server, drop=("conditions",))
        )
    assert response.status_code == 412
