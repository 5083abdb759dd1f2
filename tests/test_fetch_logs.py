"""Fetch failures are logged without the patient or the fhirServer's path and credentials."""

import copy
import logging

import pytest
from fastapi.testclient import TestClient

from cds_service.app import create_app
from tests.conftest import app_settings, load_example
from tests.fhir_server import fhir_server

EXAMPLE = "red-flag-cauda-equina--diagnosis-icd10"


def test_a_refused_fhir_server_is_logged_by_origin_only(caplog: pytest.LogCaptureFixture) -> None:
    request = copy.deepcopy(load_example(EXAMPLE)[0])
    del request["prefetch"]["observations"]
    request["fhirServer"] = "https://clinician:s3cret@ehr.example/tenant-42/fhir"
    with TestClient(create_app(app_settings())) as client, caplog.at_level(logging.INFO):
        answer = client.post("/cds-services/patient-view", json=request)
    assert answer.status_code == 412
    assert "https://ehr.example" in caplog.text
    for secret in ("s3cret", "clinician", "tenant-42"):
        assert secret not in caplog.text
        assert secret not in answer.text


@pytest.mark.slow  # a loopback FHIR server
def test_a_failed_fetch_is_logged_without_the_patient(caplog: pytest.LogCaptureFixture) -> None:
    request = copy.deepcopy(load_example(EXAMPLE)[0])
    del request["prefetch"]["observations"]
    patient = request["context"]["patientId"]
    with fhir_server() as server:
        request["fhirServer"] = server.base
        settings = app_settings(fhir_servers=[server.base], fhir_allow_private=True)
        with TestClient(create_app(settings)) as client, caplog.at_level(logging.INFO):
            answer = client.post("/cds-services/patient-view", json=request)
    assert answer.status_code == 412  # the server answers 404 to every search
    # The key and its template are logged, never the query (it names the patient).
    logged = "prefetch observations-vital-signs (Observation?patient={{context.patientId}}"
    assert logged in caplog.text
    assert patient not in caplog.text
