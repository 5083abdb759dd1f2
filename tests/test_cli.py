"""The `cds-service` command line, run as a real subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE_TODAY, EXAMPLES

pytestmark = pytest.mark.slow  # every test runs the CLI as a subprocess

ENV = {**os.environ, "CDS_TODAY": EXAMPLE_TODAY.isoformat()}


def run(
    *args: str, stdin: str | None = None, env: dict[str, str] = ENV
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cds_service", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def _rules(stdout: str) -> list[str]:
    return [c["extension"]["org.spine-cds.rule"]["id"] for c in json.loads(stdout)["cards"]]


def test_evaluate_a_file_prints_the_cards() -> None:
    result = run("evaluate", str(EXAMPLES / "red-flag-cauda-equina--diagnosis-icd10.json"))
    assert result.returncode == 0, result.stderr
    assert _rules(result.stdout) == ["red-flag-cauda-equina"]


def test_evaluate_reads_stdin() -> None:
    text = (EXAMPLES / "neurology-radiculopathy--seven-weeks.json").read_text()
    result = run("evaluate", "-", stdin=text)
    assert result.returncode == 0, result.stderr
    assert _rules(result.stdout) == ["neurology-radiculopathy"]


def test_evaluate_bad_input_fails_with_a_message(tmp_path: Path) -> None:
    request = json.loads((EXAMPLES / "neurology-radiculopathy--seven-weeks.json").read_text())
    request["prefetch"]["conditions"]["entry"][0]["resource"]["onsetDateTime"] = "yesterday"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(request))
    result = run("evaluate", str(bad))
    assert result.returncode != 0
    assert result.stdout == ""
    assert "prefetch.conditions.entry[0].resource.onsetDateTime" in result.stderr


def test_evaluate_unreadable_json_fails() -> None:
    result = run("evaluate", "-", stdin="{not json")
    assert result.returncode != 0
    assert "cannot read" in result.stderr


def test_rules_check_reports_the_rule_set() -> None:
    result = run("rules", "check")
    assert result.returncode == 0, result.stderr
    assert "rules" in result.stdout
    assert "value sets ok" in result.stdout


def test_rules_check_fails_on_a_broken_knowledge_base(tmp_path: Path) -> None:
    (tmp_path / "ruleset.yaml").write_text("name: [broken\n")
    result = run("rules", "check", env={**ENV, "CDS_RULES_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert "ruleset.yaml" in result.stderr


def test_invalid_setting_is_reported_by_name() -> None:
    result = run("rules", "check", env={**ENV, "CDS_TODAY": "someday"})
    assert result.returncode == 2
    assert "invalid setting CDS_TODAY" in result.stderr


def test_openapi_command_prints_only_the_committed_document() -> None:
    result = run("openapi")
    assert result.returncode == 0, result.stderr
    committed = json.loads((EXAMPLES.parent / "openapi" / "openapi.json").read_text())
    assert json.loads(result.stdout) == committed


def test_store_migrate_then_purge(tmp_path: Path) -> None:
    env = {**ENV, "CDS_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}"}
    assert run("store", "migrate", env=env).returncode == 0
    purged = run("store", "purge", env=env)
    assert purged.returncode == 0, purged.stderr
    assert json.loads(purged.stdout) == {
        **{"cards": 0, "evaluations": 0, "feedback": 0, "jwt_ids": 0},
        **{"follow_ups": 0, "possible_misses": 0},
    }


def test_example_prints_the_request_rebased_to_today() -> None:
    name = "red-flag-cauda-equina--diagnosis-icd10"
    written = json.loads((EXAMPLES / f"{name}.json").read_text())
    as_written = run("example", name)  # CDS_TODAY is the anchor date
    assert json.loads(as_written.stdout) == written
    a_year_on = run("example", name, env={**ENV, "CDS_TODAY": "2027-11-01"})
    assert a_year_on.returncode == 0, a_year_on.stderr
    evaluated = run("evaluate", "-", stdin=a_year_on.stdout, env={**ENV, "CDS_TODAY": "2027-11-01"})
    assert _rules(evaluated.stdout) == ["red-flag-cauda-equina"]
    assert "2027-10-31" in a_year_on.stdout  # one day old, a year on
    assert "2026-10-31" not in a_year_on.stdout


def test_example_lists_the_names_and_refuses_an_unknown_one() -> None:
    listed = run("example")
    assert listed.returncode == 0
    assert listed.stdout.split() == [path.stem for path in sorted(EXAMPLES.glob("*.json"))]
    unknown = run("example", "no-such-example")
    assert unknown.returncode == 1
    assert unknown.stderr.strip().startswith("cds-service: no example 'no-such-example'")
