"""Every value-set code is verified: ICD-10-CM against the CMS tabular, the rest by their source.

ICD-10-CM is checked against the April 2026 CMS tabular list shipped by `simple-icd-10-cm`:
each code exists, its display is the tabular's, and the codes the service matches for a concept
are exactly the listed codes and the descendants of its roots, over the whole tabular.
"""

import importlib
import shutil
import warnings
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from cds_service.knowledge import Code, Knowledge, KnowledgeError, ValueSet, load_knowledge
from tests.conftest import EXAMPLES, ROOT
from tests.synthea.convert import load_corpus, load_request


@pytest.fixture(scope="module")
def icd() -> ModuleType:
    """The tabular: `simple-icd-10-cm` reads it on import (~2 s), so only when a test needs it."""
    with warnings.catch_warnings():  # the package reads its data through a deprecated API
        warnings.simplefilter("ignore", DeprecationWarning)
        return importlib.import_module("simple_icd_10_cm")


def _codes(knowledge: Knowledge) -> Iterator[tuple[ValueSet, Code]]:
    for value_set in knowledge.value_sets.values():
        for code in [*value_set.codes, *value_set.positive]:
            yield value_set, code


def _icd(knowledge: Knowledge) -> list[tuple[ValueSet, Code]]:
    return [(vs, code) for vs, code in _codes(knowledge) if code.system == "icd-10-cm"]


def test_an_unverified_code_cannot_be_loaded(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    back_pain = rules / "valuesets" / "back-pain.yaml"
    back_pain.write_text(
        back_pain.read_text() + "- {system: icd-10-cm, code: M54.2, display: x, unverified: true}\n"
    )
    with pytest.raises(KnowledgeError, match="unverified"):
        load_knowledge(rules)


def test_every_code_outside_icd10cm_names_its_published_source(knowledge: Knowledge) -> None:
    missing = [
        f"{vs.concept}: {c.system} {c.code}"
        for vs, c in _codes(knowledge)
        if c.system != "icd-10-cm" and (c.source is None or c.source not in vs.sources)
    ]
    assert missing == []


@pytest.mark.slow  # reads the whole ICD-10-CM tabular
def test_icd10cm_codes_exist_in_the_tabular_with_their_display(
    knowledge: Knowledge, icd: ModuleType
) -> None:
    wrong: list[str] = []
    for value_set, code in _icd(knowledge):
        if code.source is not None:  # a retired code, documented by its source
            assert code.source in value_set.sources
            assert not icd.is_valid_item(code.code), f"{code.code} is current: drop `source`"
        elif not icd.is_valid_item(code.code):
            wrong.append(f"{value_set.concept}: {code.code} is not in the tabular")
        elif icd.get_description(code.code).casefold() != code.display.casefold():
            wrong.append(
                f"{value_set.concept}: {code.code} is {icd.get_description(code.code)!r}, "
                f"not {code.display!r}"
            )
    assert wrong == []


@pytest.fixture(scope="module")
def tabular(icd: ModuleType) -> list[str]:
    """Every category, subcategory and code of the tabular (no chapters, no blocks)."""
    return [code for code in icd.get_all_codes() if icd.is_category_or_subcategory(code)]


@pytest.mark.slow  # reads the whole ICD-10-CM tabular
def test_icd10cm_matching_equals_the_tabular_hierarchy(
    knowledge: Knowledge, tabular: list[str], icd: ModuleType
) -> None:
    """For each concept: codes matched by the service == listed codes + their descendants."""
    expected: dict[str, set[str]] = defaultdict(set)
    for value_set, code in _icd(knowledge):
        if code.source is not None or value_set.fact == "observation":
            continue
        subtree = icd.get_descendants(code.code) if code.descendants else []
        expected[value_set.concept] |= {
            c for c in [code.code, *subtree] if icd.is_category_or_subcategory(c)
        }
    matched: dict[str, set[str]] = defaultdict(set)
    uri = knowledge.system_uri("icd-10-cm")
    for tabular_code in tabular:
        for concept in knowledge.concepts(uri, tabular_code):
            matched[concept].add(tabular_code)
    for concept, codes in expected.items():
        extra, missed = sorted(matched[concept] - codes), sorted(codes - matched[concept])
        assert (extra, missed) == ([], []), f"{concept}: matched outside / missed in the tabular"


def test_icd10cm_matching_ignores_dots_and_case(knowledge: Knowledge) -> None:
    uri = knowledge.system_uri("icd-10-cm")
    assert "back-pain" in knowledge.concepts(uri, "M54.50")
    assert knowledge.concepts(uri, "m5450") == knowledge.concepts(uri, "M54.50")


CORPUS_SOURCES = {"synthea-smart": ("smart-r4",), "synthea-exf": ("exf-california", "exf-new-york")}
"""Value-set sources that are the Synthea corpus kept in fhir_examples/synthea: its codes are
checked against the data itself."""


@pytest.mark.slow  # reads every corpus request
def test_codes_sourced_from_the_synthea_corpus_are_in_it(knowledge: Knowledge) -> None:
    corpus = load_corpus(EXAMPLES / "synthea")
    seen: set[tuple[str, str, str]] = set()  # (corpus source, code, display)
    for patient in corpus["patients"]:
        request = load_request(EXAMPLES / "synthea", patient["id"])
        for entry in request["prefetch"]["conditions"].get("entry", []):
            for coding in entry["resource"].get("code", {}).get("coding", []):
                seen.add((patient["source"], coding.get("code"), coding.get("display")))
    missing = []
    for value_set, code in _codes(knowledge):
        if code.source in CORPUS_SOURCES:
            names = CORPUS_SOURCES[code.source]
            if not any((name, code.code, code.display) in seen for name in names):
                missing.append(f"{value_set.concept}: {code.code} {code.display!r}")
    assert missing == []
