"""The Synthea corpus (fhir_examples/synthea/): real-data patient-view requests.

Every request is accepted (no 400/412) and gives the cards `expected.json` records. When a rule
or value set change alters them, regenerate and re-review (fhir_examples/synthea/README.md):
`python -m tests.synthea.convert --out fhir_examples/synthea --update-expected`, then read the
diff of `expected.json` and `REVIEW.md`.
"""

import gzip
import json
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import date
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cds_service.app import create_app
from cds_service.errors import CDSError
from cds_service.triage import Triage
from tests.conftest import EXAMPLES, app_settings
from tests.synthea.convert import evaluate, load_corpus, load_request, patient_date

CORPUS_DIR = EXAMPLES / "synthea"
CORPUS = load_corpus(CORPUS_DIR)
PATIENTS = [patient["id"] for patient in CORPUS["patients"]]
# Each source has its own evaluation date (the day after its latest data), kept per patient.
DATES = {patient["id"]: patient_date(CORPUS, patient) for patient in CORPUS["patients"]}
REGENERATE = "python -m tests.synthea.convert --out fhir_examples/synthea --update-expected"
# The fast loop (`pytest -m "not slow"`) runs a few: per source, its first back-pain patient and
# its first other patient. The whole corpus runs with the slow tests.
SAMPLE = {
    next(p["id"] for p in CORPUS["patients"] if p["source"] == s["name"] and p["back_pain"] is bp)
    for s in CORPUS["sources"]
    for bp in (True, False)
}
CASES = [pytest.param(p, marks=() if p in SAMPLE else pytest.mark.slow) for p in PATIENTS]


@pytest.fixture(scope="module")
def expected() -> dict[str, Any]:
    value: dict[str, Any] = json.loads((CORPUS_DIR / "expected.json").read_text())
    return value


@pytest.fixture(scope="module")
def corpus_client() -> Iterator[Callable[[date], TestClient]]:
    """Apps of their own (fresh audit stores), one per evaluation date, made when first asked."""
    clients: dict[date, TestClient] = {}
    with ExitStack() as stack:

        def client_on(day: date) -> TestClient:
            if day not in clients:
                app = create_app(app_settings(today=day))
                clients[day] = stack.enter_context(TestClient(app))
            return clients[day]

        yield client_on


@pytest.mark.parametrize("patient_id", CASES)
def test_synthea_patient_is_accepted_and_gets_expected_cards(
    patient_id: str, triage: Triage, expected: dict[str, Any]
) -> None:
    request = load_request(CORPUS_DIR, patient_id)
    try:
        cards = evaluate(triage, request, DATES[patient_id])
    except CDSError as error:
        pytest.fail(f"the service rejects Synthea patient {patient_id}: {error.status} {error}")
    ruleset = expected["ruleset"]
    now = triage.knowledge.manifest.version
    assert cards == expected["cards"].get(patient_id), (
        f"cards changed (expected.json: rule set {ruleset['version']}, now {now}); if intended, "
        f"run `{REGENERATE}` and have the diff of expected.json and REVIEW.md reviewed"
    )


def test_synthea_corpus_is_large_and_every_back_pain_patient_is_expected(
    expected: dict[str, Any],
) -> None:
    assert len(PATIENTS) >= 200
    assert len(set(PATIENTS)) == len(PATIENTS)
    stored = sorted(path.name for path in (CORPUS_DIR / "requests").glob("*.json.gz"))
    assert stored == sorted(f"{patient_id}.json.gz" for patient_id in PATIENTS)
    assert expected["corpus_date"] == CORPUS["corpus_date"]
    assert expected["dates"] == {source["name"]: source["date"] for source in CORPUS["sources"]}
    sources = {source["name"]: source for source in CORPUS["sources"]}
    by_source = Counter(patient["source"] for patient in CORPUS["patients"])
    assert by_source == {name: source["patients"] for name, source in sources.items()}
    assert all(
        DATES[p["id"]].isoformat() == sources[p["source"]]["date"] for p in CORPUS["patients"]
    )
    back_pain = [p["id"] for p in CORPUS["patients"] if p["back_pain"]]
    assert back_pain
    missing = [patient_id for patient_id in back_pain if patient_id not in expected["cards"]]
    assert not missing, f"back-pain patients without an entry in expected.json: {missing}"


@pytest.mark.slow  # an app per evaluation date (~1 s each); in-process above
@pytest.mark.parametrize("patient_id", PATIENTS)
def test_synthea_patient_is_accepted_over_http(
    patient_id: str, corpus_client: Callable[[date], TestClient]
) -> None:
    """Over HTTP too: no 400/412, and no 413 (each body is under CDS_MAX_BODY_BYTES)."""
    body = gzip.decompress((CORPUS_DIR / "requests" / f"{patient_id}.json.gz").read_bytes())
    response = corpus_client(DATES[patient_id]).post(
        "/cds-services/patient-view",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
