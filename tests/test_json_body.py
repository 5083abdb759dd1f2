"""CDS Hooks bodies are parsed strictly (orjson), and no error echoes text it cannot encode."""

import json

from fastapi.testclient import TestClient

from tests.conftest import load_example

EXAMPLE = "red-flag-cauda-equina--diagnosis-icd10"


def _post(client: TestClient, body: bytes) -> tuple[int, str]:
    answer = client.post(
        "/cds-services/patient-view", content=body, headers={"Content-Type": "application/json"}
    )
    assert answer.json()["resourceType"] == "OperationOutcome"
    return answer.status_code, answer.json()["issue"][0]["diagnostics"]


def test_nan_is_malformed_json_not_a_value(client: TestClient) -> None:
    status, message = _post(client, b'{"hook": NaN, "hookInstance": "x", "context": {}}')
    assert status == 400
    assert message.startswith("malformed JSON")


def test_raw_surrogate_bytes_are_a_400_not_a_500(client: TestClient) -> None:
    request, _ = load_example(EXAMPLE)
    request["prefetch"]["conditions"]["entry"][0]["resource"]["subject"] = {
        "reference": "Patient/a@b"
    }
    body = json.dumps(request).encode().replace(b"a@b", b"a\xed\xa0\x80b")
    status, message = _post(client, body)
    assert status == 400
    assert message.startswith("malformed JSON")


def test_text_that_merely_shows_a_surrogate_escape_is_accepted(client: TestClient) -> None:
    """`"\\\\ud800"` is a backslash and five letters, not an escape: valid text."""
    request, _ = load_example(EXAMPLE)
    request["context"]["userId"] = "Practitioner/a\\ud800b"
    answer = client.post("/cds-services/patient-view", json=request)
    assert answer.status_code == 200, answer.text
