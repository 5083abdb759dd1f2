"""`cds-service report` prints the same numbers as the committee's API, from the same store."""

import csv
import io
import json
import os
import subprocess
import sys
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cds_service.app import create_app
from tests.conftest import app_settings, load_example

pytestmark = pytest.mark.slow  # runs the CLI as a subprocess

ADMIN = {"Authorization": "Bearer committee-token"}


def _report(database_url: str, *args: str) -> str:
    env = {**os.environ, "CDS_DATABASE_URL": database_url}
    result = subprocess.run(
        [sys.executable, "-m", "cds_service", "report", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    return result.stdout


def test_the_report_command_equals_the_admin_api() -> None:
    settings = app_settings(admin_token="committee-token")
    with TestClient(create_app(settings)) as client:
        request, _ = load_example("red-flag-cauda-equina--diagnosis-icd10")
        card = client.post(f"/cds-services/{request['hook']}", json=request).json()["cards"][0]
        outcome: dict[str, Any] = {
            "card": card["uuid"],
            "outcome": "overridden",
            "overrideReason": {"reason": card["overrideReasons"][0]},
            "outcomeTimestamp": "2030-01-01T10:00:00Z",
        }
        client.post(f"/cds-services/{request['hook']}/feedback", json={"feedback": [outcome]})
        api = client.get("/admin/report", headers=ADMIN).json()

    printed = json.loads(_report(settings.database_url, "--format", "json"))
    assert printed == api
    assert api["totals"]["overridden"] == 1

    rows = list(csv.DictReader(io.StringIO(_report(settings.database_url, "--format", "csv"))))
    assert [(row["rule"], row["overridden"]) for row in rows] == [(card_rule(card), "1")]
    table = _report(settings.database_url)
    assert card_rule(card) in table


def card_rule(card: dict[str, Any]) -> str:
    rule: str = card["extension"]["org.spine-cds.rule"]["id"]
    return rule
