"""The hook registry: adding a hook is one registry entry plus the rules that name it."""

import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cds_service.app import create_app
from cds_service.hooks import HOOKS, Hook
from cds_service.knowledge import KnowledgeError, load_knowledge
from cds_service.models import PatientViewContext
from tests.conftest import ROOT, app_settings, load_example

DISCHARGE = Hook(
    id="encounter-discharge",
    context=PatientViewContext,
    title="Back pain triage at discharge",
    description="Escalates back-pain red flags before the patient leaves.",
)
ALL_HOOKS = "hooks: [patient-view, order-select, order-sign]"


def _rules_naming_discharge(folder: Path, only: set[str] | None = None) -> Path:
    """A copy of the knowledge base whose rules (or only those in `only`) also name the hook."""
    rules = folder / "rules"
    shutil.copytree(ROOT / "rules", rules)
    for path in (rules / "rules").glob("*.yaml"):
        if only is None or path.stem in only:
            text = path.read_text()
            path.write_text(text.replace(ALL_HOOKS, ALL_HOOKS[:-1] + ", encounter-discharge]"))
    return rules


def test_a_new_hook_is_served_from_its_registry_entry(tmp_path: Path) -> None:
    hooks = HOOKS.with_hook(DISCHARGE)
    settings = app_settings(rules_dir=_rules_naming_discharge(tmp_path))
    request, _ = load_example("red-flag-cauda-equina--diagnosis-icd10")
    request["hook"] = DISCHARGE.id
    with TestClient(create_app(settings, hooks)) as client:
        services = client.get("/cds-services").json()["services"]
        assert [s["id"] for s in services] == [*HOOKS, DISCHARGE.id]
        assert services[-1]["title"] == DISCHARGE.title
        answer = client.post(f"/cds-services/{DISCHARGE.id}", json=request)
        assert answer.status_code == 200, answer.text
        rules = [c["extension"]["org.spine-cds.rule"]["id"] for c in answer.json()["cards"]]
        assert rules == ["red-flag-cauda-equina"]
        assert DISCHARGE.id in client.get("/playground/hooks").json()
        (parameter,) = client.get("/openapi.json").json()["paths"]["/cds-services/{service_id}"][
            "post"
        ]["parameters"]
        assert parameter["schema"]["enum"] == [*HOOKS, DISCHARGE.id]


def test_a_rule_applies_only_to_the_hooks_it_names(tmp_path: Path) -> None:
    hooks = HOOKS.with_hook(DISCHARGE)
    settings = app_settings(rules_dir=_rules_naming_discharge(tmp_path, only={"derive-back-pain"}))
    request, _ = load_example("red-flag-cauda-equina--diagnosis-icd10")
    request["hook"] = DISCHARGE.id
    with TestClient(create_app(settings, hooks)) as client:
        answer = client.post(f"/cds-services/{DISCHARGE.id}", json=request)
        assert answer.status_code == 200, answer.text
        assert answer.json()["cards"] == []


def test_an_unregistered_hook_is_404_and_a_rule_naming_one_stops_loading(
    tmp_path: Path, client: TestClient
) -> None:
    request, _ = load_example("red-flag-cauda-equina--diagnosis-icd10")
    request["hook"] = DISCHARGE.id
    assert client.post(f"/cds-services/{DISCHARGE.id}", json=request).status_code == 404
    rules = _rules_naming_discharge(tmp_path, only={"red-flag-aaa"})
    with pytest.raises(KnowledgeError, match="unknown hooks") as error:
        load_knowledge(rules, HOOKS)
    assert error.value.path.name == "red-flag-aaa.yaml"
