"""The red-flag route matrix: generated from `rules/`, each route that applies covered by an
example, `rules/routes.yaml` checked against the knowledge base."""

import shutil
from collections import defaultdict
from pathlib import Path

import pytest

from cds_service.knowledge import Knowledge, KnowledgeError
from cds_service.models import HookRequest
from cds_service.red_flag_routes import (
    Matrix,
    applicable,
    build_matrix,
    matrix_markdown,
    routes_used,
)
from cds_service.triage import Triage
from tests.conftest import EXAMPLE_TODAY, ROOT, example_names, load_example


@pytest.fixture(scope="module")
def matrix(knowledge: Knowledge) -> Matrix:
    return build_matrix(knowledge, ROOT / "rules")


def test_docs_red_flag_routes_is_current(knowledge: Knowledge, matrix: Matrix) -> None:
    committed = (ROOT / "docs" / "red-flag-routes.md").read_text()
    assert committed == matrix_markdown(knowledge, matrix), (
        "regenerate: cds-service rules matrix > docs/red-flag-routes.md"
    )


def test_every_route_that_applies_has_an_example(triage: Triage, matrix: Matrix) -> None:
    covered: dict[tuple[str, str], list[str]] = defaultdict(list)
    for name in example_names():
        request, _ = load_example(name)
        body = HookRequest.model_validate(request)
        for cell in routes_used(triage, body, EXAMPLE_TODAY):
            covered[cell].append(name)
    missing = sorted(matrix.cells() - covered.keys())
    assert not missing, f"no example fires a red flag by these (concept, route): {missing}"


def test_the_matrix_rows_are_the_red_flag_concepts(knowledge: Knowledge, matrix: Matrix) -> None:
    rows = {row.concept: row for row in matrix.rows}
    assert "back-pain" in rows  # read through the derived fact every red flag rests on
    assert {"anticoagulants", "body-temperature", "crp"} <= rows.keys()
    assert "nsaids" not in rows  # conservative care feeds no red flag
    assert "dexa-t-score" not in rows  # a measurement is the finding's `measurement` route
    assert rows["osteoporosis"].applicable >= {"condition-snomed", "measurement"}
    assert rows["anticoagulants"].applicable == {
        "medicine-code",
        "medicine-reference",
        "medicine-name",
    }
    assert applicable(knowledge, knowledge.value_sets["conservative-care"]) == {"procedure"}
    surgery = applicable(knowledge, knowledge.value_sets["prior-spine-surgery"])
    assert {"procedure", "condition-icd-10-cm"} <= surgery  # laminectomy; M96.1
    assert "condition-snomed" not in surgery  # its SNOMED CT codes are all procedures
    assert "lab-flag" in rows["crp"].applicable
    assert "lab-flag" not in rows["body-temperature"].applicable


@pytest.mark.parametrize(
    ("routes_yaml", "problem"),
    [
        ("not-applicable: {nsaids: {medicine-code: x}}", "'nsaids' is not a concept"),
        ("not-applicable: {cancer: {telepathy: x}}", "unknown route 'telepathy'"),
        ("not-applicable: {cancer: {medicine-code: x}}", "has no medicine-code route"),
        ("not-applicable: {cancer: {free-text: ' '}}", "needs a reason"),
        ("populations: {x: {title: X, finding: nope}}", "unknown finding 'nope'"),
        ("populations: {x: {title: X}}", "name one of age, finding, derived"),
        ("populations: {x: {title: X, age: older, colour: red}}", "Extra inputs"),
    ],
)
def test_routes_yaml_is_checked(
    knowledge: Knowledge, tmp_path: Path, routes_yaml: str, problem: str
) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    (rules / "routes.yaml").write_text(routes_yaml + "\n")
    with pytest.raises(KnowledgeError, match=problem):
        build_matrix(knowledge, rules)


def test_populations_name_the_rules_that_treat_them_apart(
    knowledge: Knowledge, matrix: Matrix
) -> None:
    text = matrix_markdown(knowledge, matrix)
    table = text.split("## Populations")[1]
    assert "| `paediatric-back-pain` | match via `child` |" in table
    assert "| `red-flag-fracture-fragility` |  | match |" in table
    assert "unless `red-flag`" not in table  # the red flag is not a population
    assert "| `red-flag-spinal-infection-suspected` |  |  |  | match |" in table
    assert "Pregnancy: every card adds the caution for `pregnant`" in table


@pytest.mark.parametrize(
    ("name", "cells"),
    [
        (
            "red-flag-anticoagulated-sudden-pain--warfarin-by-name-only",
            {("anticoagulants", "medicine-name"), ("back-pain", "condition-icd-10-cm")},
        ),
        (
            "red-flag-anticoagulated-sudden-pain--warfarin-contained-medication",
            {("anticoagulants", "medicine-reference"), ("back-pain", "condition-snomed")},
        ),
        (
            "red-flag-cauda-equina--back-pain-and-retention-as-symptom-answers",
            {("back-pain", "observation-answer"), ("cauda-equina-sign", "observation-answer")},
        ),
        (
            "red-flag-neuro-deficit--back-pain-and-foot-drop-observed-true",
            {("back-pain", "observation-of-finding"), ("neuro-deficit", "observation-of-finding")},
        ),
        (
            "red-flag-fracture-fragility--dexa-t-score-osteoporosis",
            {("osteoporosis", "measurement"), ("back-pain", "condition-icd-10-cm")},
        ),
        (
            "serious-cause-risk--spinal-injury-and-fracture-written-not-coded",
            {("major-spinal-trauma", "free-text"), ("vertebral-fracture", "free-text")},
        ),
        (
            "red-flag-spinal-infection-suspected--crp-flagged-high-unknown-unit",
            {
                ("crp", "lab-flag"),
                ("immunosuppression", "condition-icd-10-cm"),
                ("back-pain", "condition-icd-10-cm"),
            },
        ),
        ("primary-care-acute-nonspecific--urinary-retention-observed-absent", set()),
        ("primary-care-acute-nonspecific--negated-text-is-listed-not-flagged", set()),
    ],
)
def test_routes_used_reads_the_route_from_the_evidence(
    triage: Triage, name: str, cells: set[tuple[str, str]]
) -> None:
    request, _ = load_example(name)
    used = routes_used(triage, HookRequest.model_validate(request), EXAMPLE_TODAY)
    assert used == cells
