"""The README's quick start holds on any date, and the answer it prints is the service's."""

import json
import re
from collections import Counter
from datetime import date, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cds_service.app import create_app
from cds_service.triage import today_utc
from tests.conftest import EXAMPLE_TODAY, ROOT, app_settings, load_example

README = (ROOT / "README.md").read_text(encoding="utf-8")
QUICK_START = README[README.index("## Quick start") : README.index("## Interfaces")]
COMMAND = re.compile(
    r"\.venv/bin/cds-service example (?P<name>\S+) \|\n\s*curl -s -X POST "
    r"http://127\.0\.0\.1:8000(?P<path>/cds-services/[a-z-]+) \\\n"
)


def _printed_answer() -> dict[str, Any]:
    block = QUICK_START.split("```json\n", 1)[1].split("```", 1)[0]
    answer: dict[str, Any] = json.loads(block)
    return answer


def _shortened(value: Any) -> Any:
    """`value` as the README prints it: ids cut to their first 8 characters, no override
    reasons."""
    if isinstance(value, dict):
        short = {"uuid", "appContext"}
        return {
            key: f"{item[:8]}-…" if key in short else ["…"] if key == "overrideReasons" else item
            for key, item in ((k, _shortened(v)) for k, v in value.items())
        }
    if isinstance(value, list):
        return [_shortened(item) for item in value]
    return value


def _answer(day: date) -> dict[str, Any]:
    """The quick start's call, on `day`: the example rebased to it, sent to the service."""
    match = COMMAND.search(QUICK_START)
    assert match, "the quick start's example command changed: update this test"
    request, _ = load_example(match["name"], day)
    app = create_app(app_settings(today=day))
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        response = client.post(match["path"], json=request)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _without_ids(answer: dict[str, Any]) -> Any:
    blank = re.compile(r'"(uuid|appContext)": "[^"]*"')
    return json.loads(blank.sub(r'"\1": ""', json.dumps(_shortened(answer))))


def test_the_printed_answer_is_the_services_on_the_anchor_date() -> None:
    assert f"here on {EXAMPLE_TODAY.isoformat()}" in QUICK_START
    assert _without_ids(_answer(EXAMPLE_TODAY)) == _without_ids(_printed_answer())


@pytest.mark.parametrize(
    "day", [today_utc(), today_utc() + timedelta(days=365)], ids=["today", "a-year-from-now"]
)
def test_the_quick_start_gives_the_printed_card_on_any_date(day: date) -> None:
    (printed,) = _printed_answer()["cards"]
    (card,) = _answer(day)["cards"]
    assert card["extension"] == printed["extension"]
    assert (card["summary"], card["indicator"]) == (printed["summary"], printed["indicator"])


def test_the_synthea_corpus_figures_are_the_corpus() -> None:
    corpus = json.loads((ROOT / "fhir_examples" / "synthea" / "corpus.json").read_text())
    by_source = Counter(patient["source"] for patient in corpus["patients"])
    smart = by_source.pop("smart-r4")
    stated = re.search(
        r"real-data corpus: (\d+) Synthea patients, (\d+) of the SMART sandbox\n"
        r"\(smart-on-fhir/generated-sample-data, R4\) and (\d+) from",
        README,
    )
    assert stated, "the README's Synthea figures changed wording: update this test"
    assert [int(n) for n in stated.groups()] == [len(corpus["patients"]), smart, by_source.total()]
