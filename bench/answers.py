"""Every answer the service gives to the examples and the Synthea corpus, one line each, so two
commits can be compared whole (not only the parts the expectation files pin down).

Each request of `fhir_examples/` is evaluated on four days (as written, 2026-12-02, a year
later, a leap day; the examples move with the day) and each corpus patient on its own date;
a line is the name, the day and the full response as sorted JSON, with card ids and review-link
tokens numbered by first appearance (they are random). A performance change must leave the file
unchanged:

    .venv/bin/python -m bench.answers > /tmp/after.txt
    git stash; .venv/bin/python -m bench.answers > /tmp/before.txt; git stash pop
    cmp /tmp/before.txt /tmp/after.txt
"""

import json
import re
import sys
from datetime import date
from typing import Any

from cds_service.errors import CDSError
from cds_service.knowledge import load_knowledge
from cds_service.models import HookRequest, dump
from cds_service.triage import Triage
from tests.conftest import EXAMPLE_TODAY, EXAMPLES, example_names, load_example
from tests.synthea.convert import load_corpus, load_request, patient_date

DAYS = [EXAMPLE_TODAY, date(2026, 12, 2), date(2027, 12, 2), date(2028, 2, 29)]
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TOKEN = re.compile(r"(U\d+)\.[A-Za-z0-9_-]{20,}")


def normalised(response: dict[str, Any]) -> str:
    """The response as sorted JSON, its random ids numbered by first appearance."""
    seen: dict[str, int] = {}
    text = json.dumps(response, sort_keys=True)
    text = _UUID.sub(lambda m: f"U{seen.setdefault(m.group(0), len(seen))}", text)
    return _TOKEN.sub(r"\1.TOKEN", text)


def answer(triage: Triage, request: dict[str, Any], day: date) -> str:
    try:
        body = HookRequest.model_validate(request)
        return normalised(dump(triage.evaluate(body, request["hook"], day, "http://x/review")))
    except CDSError as error:
        return json.dumps({"status": error.status})


def main() -> None:
    triage = Triage(load_knowledge())
    for name in example_names():
        for day in DAYS:
            request, _ = load_example(name, day)
            print(name, day, answer(triage, request, day))
    corpus = load_corpus(EXAMPLES / "synthea")
    for patient in corpus["patients"]:
        request = load_request(EXAMPLES / "synthea", patient["id"])
        print("synthea", patient["id"], answer(triage, request, patient_date(corpus, patient)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
