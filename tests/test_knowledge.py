"""The knowledge base: checked at load, broken files named, new rules need no Python."""

import shutil
from pathlib import Path

import pytest

from cds_service.knowledge import (
    Knowledge,
    KnowledgeError,
    _remembered_unit_key,
    load_knowledge,
    unit_key,
)
from cds_service.models import HookRequest, dump
from cds_service.rules_table import rules_table
from cds_service.triage import Triage
from tests.conftest import EXAMPLE_TODAY, ROOT, load_example


@pytest.fixture
def rules_copy(tmp_path: Path) -> Path:
    target = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", target)
    return target


SPECIALTIES = {  # specialty key -> (NUCC performerType, SNOMED CT referral code)
    "emergency": ("207P00000X", "183866009"),
    "neurosurgery": ("207T00000X", "308482002"),
    "orthopedic-spine": ("207XS0117X", "308481009"),
    "physiatry": ("208100000X", "306289000"),
    "pain-management": ("208VP0000X", "306265007"),
    "neurology": ("2084N0400X", "308474002"),
    "rheumatology": ("207RR0500X", "306290009"),
    "physical-therapy": ("225100000X", "308447003"),
    "occupational-therapy": ("225X00000X", "308453003"),
    "chiropractic": ("111N00000X", "308449000"),
    "primary-care": ("207Q00000X", None),
}


def test_specialties_follow_the_spec_table(knowledge: Knowledge) -> None:
    table = {
        key: (s.nucc.code, s.referral.code if s.referral else None)
        for key, s in knowledge.specialties.items()
    }
    assert table == SPECIALTIES


def test_both_icd10_and_snomed_map_cauda_equina(knowledge: Knowledge) -> None:
    assert knowledge.concepts("http://hl7.org/fhir/sid/icd-10-cm", "G83.4") == ("cauda-equina",)
    assert knowledge.concepts("http://snomed.info/sct", "192970008") == ("cauda-equina",)


def test_concepts_of_one_kind_are_remembered_within_a_bound(
    knowledge: Knowledge, monkeypatch: pytest.MonkeyPatch
) -> None:
    snomed = "http://snomed.info/sct"
    assert knowledge.concepts_of(snomed, "192970008", "finding") == ("cauda-equina",)
    assert knowledge.concepts_of(snomed, "192970008", "medication") == ()
    assert knowledge.concepts_of("http://loinc.org", "8310-5", "observation") == (
        "body-temperature",
    )
    monkeypatch.setattr("cds_service.knowledge._REMEMBERED", 100)
    for code in range(250):  # codes come from requests: the memory stays bounded
        knowledge.concepts_of(snomed, str(code), "finding")
    assert len(knowledge._of_kind) <= 100
    assert len(knowledge._known) <= 100
    kept = _remembered_unit_key.cache_info().currsize
    assert unit_key("[DEG F]" * 10) == "degf" * 10  # a unit from a request: read, not kept
    assert _remembered_unit_key.cache_info().currsize == kept
    long = "9" * 200  # a code no terminology has: looked up, never kept
    assert knowledge.concepts_of(snomed, long, "finding") == ()
    assert (snomed, long) not in knowledge._known
    assert (snomed, long, "finding") not in knowledge._of_kind
    assert knowledge.concepts_of(snomed, "192970008", "finding") == ("cauda-equina",)


@pytest.mark.slow  # loads a copy of the knowledge base per case (~1 s each)
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
            "rules/neurology-radiculopathy.yaml",
            "unless: [red-flag]",
            "unless: [nope]",
            "no rule derives",
        ),
        ("valuesets/fever.yaml", "system: snomed", "system: made-up", "unknown code system"),
        (
            "valuesets/weight-loss.yaml",
            "unless: [intentional-weight-loss]",
            "unless: [body-weight]",
            "unless 'body-weight' is not a finding concept",
        ),
        ("config.yaml", "fever_celsius: 38.0", "fever_celsius: hot", "thresholds.fever_celsius"),
        (
            "config.yaml",
            "system: hl7-non-adherence, code: patient-contraindication",
            "system: made-up, code: patient-contraindication",
            "override reason 'patient-contraindication': unknown system",
        ),
        ("rules/derive-fever.yaml", "match:", "match: [oops\n", "cannot read YAML"),
        (
            "rules/neurology-radiculopathy.yaml",
            "\ncard:",
            "\nrates-order: appropriate\ncard:",
            "`rates-order` needs an `order` clause",
        ),
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
hooks: [patient-view]
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


@pytest.mark.slow  # loads a copy of the knowledge base and compiles its rules
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


def test_docs_rules_table_is_current(knowledge: Knowledge) -> None:
    committed = (ROOT / "docs" / "rules.md").read_text()
    assert committed == rules_table(knowledge), (
        "regenerate: cds-service rules table > docs/rules.md"
    )
