"""The knowledge base: checked at load, broken files named, new rules need no Python."""

import shutil
from pathlib import Path

import pytest

from cds_service.knowledge import Knowledge, KnowledgeError, load_knowledge
from cds_service.models import HookRequest, dump
from cds_service.service import Triage
from tests.conftest import EXAMPLE_TODAY, ROOT, load_example


@pytest.fixture
def rules_copy(tmp_path: Path) -> Path:
    target = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", target)
    return target


def test_every_specialty_and_guideline_is_well_formed(knowledge: Knowledge) -> None:
    for specialty in knowledge.specialties.values():
        assert specialty.nucc.code.endswith("X") and len(specialty.nucc.code) == 10
    for value_set in knowledge.value_sets.values():
        assert {c.system for c in value_set.codes} <= set(knowledge.manifest.code_systems)


def test_both_icd10_and_snomed_map_cauda_equina(knowledge: Knowledge) -> None:
    assert knowledge.concepts("http://hl7.org/fhir/sid/icd-10-cm", "G83.4") == ("cauda-equina",)
    assert knowledge.concepts("http://snomed.info/sct", "192970008") == ("cauda-equina",)


@pytest.mark.parametrize(
    ("file", "old", "new", "problem"),
    [
        (
            "rules/neurology-radiculopathy.yaml",
            "specialty: neurology",
            "specialty: nope",
            "unknown specialty",
        ),
        (
            "rules/neurology-radiculopathy.yaml",
            "finding: radiculopathy",
            "finding: nope",
            "unknown concept",
        ),
        ("rules/derive-fever.yaml", "gte: fever_celsius", "gte: nope", "unknown threshold"),
        (
            "rules/red-flag-cauda-equina.yaml",
            "indicator: critical",
            "indicator: loud",
            "card.indicator",
        ),
        (
            "rules/primary-care-acute-nonspecific.yaml",
            "unless: [red-flag]",
            "unless: [nope]",
            "no rule derives",
        ),
        ("valuesets/fever.yaml", "system: snomed", "system: made-up", "unknown code system"),
        ("config.yaml", "fever_celsius: 38.0", "fever_celsius: hot", "thresholds.fever_celsius"),
        ("rules/derive-fever.yaml", "match:", "match: [oops\n", "cannot read YAML"),
    ],
)
def test_broken_file_stops_loading_with_its_name_and_problem(
    rules_copy: Path, file: str, old: str, new: str, problem: str
) -> None:
    path = rules_copy / file
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(KnowledgeError) as error:
        load_knowledge(rules_copy)
    assert error.value.path == path
    assert problem in str(error.value)


EXTRA_RULE = """
id: test-neurology-early
version: 0.0.1
title: Radiculopathy at any duration (test rule)
guideline: nice-ng59
problem: radicular-pain-test
when: Any radiculopathy.
then: Refer to neurology.
match:
  - [finding: radiculopathy]
card:
  indicator: warning
  summary: "Test: radiculopathy at any duration"
  refer: {specialty: neurology, priority: routine}
"""


def test_an_extra_rule_file_adds_a_card_without_python_changes(rules_copy: Path) -> None:
    (rules_copy / "rules" / "test-neurology-early.yaml").write_text(EXTRA_RULE)
    triage = Triage(load_knowledge(rules_copy))
    request, _ = load_example("neurology-radiculopathy--resolved-sciatica-ignored")
    request["prefetch"]["conditions"]["entry"][1]["resource"]["clinicalStatus"]["coding"][0][
        "code"
    ] = "active"
    cards = dump(
        triage.evaluate(HookRequest.model_validate(request), "patient-view", EXAMPLE_TODAY)
    )
    rules = [c["extension"]["org.spine-cds.rule"]["id"] for c in cards["cards"]]
    assert "test-neurology-early" in rules
