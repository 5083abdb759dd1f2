"""Hostile input against a running spine-cds service: no request may get a 5xx.

Sends a few thousand requests of the kinds that have broken services like this one (dates whose
offset crosses year 1 or 9999, NaN and huge numbers, lone surrogates, NUL in ids, 100k-deep JSON,
5 MB bodies, wrong types and content types, odd prefetch values, draftOrders that are no Bundle,
resources about another patient, ...), generated from the example requests in fhir_examples/ by
seeded mutation plus hand-made cases, over a few concurrent connections. Prints the answers'
status codes, overall and by kind, and exits 1 when any answer is a 5xx (listing the kinds that
produced one), a connection failed, or an error answer is not a JSON OperationOutcome.

    CDS_AUTH_DISABLED=true CDS_DATABASE_URL=sqlite:///hostile.db \\
        .venv/bin/cds-service serve --port 8765 &
    .venv/bin/python bench/hostile.py --url http://127.0.0.1:8765 [--count 3000] [--seed 0]

The service must run with authentication off. Feedback cases are about a real card: the run
first posts one example and puts its card and suggestion uuids where a case's body says @CARD@
and @SUGGESTION@. Committee API cases send `--admin-token` where a header says @ADMIN@ (without
one they are 401s). The generator, `cases(seed, count)`, is importable (tests/test_hostile.py).
"""

import argparse
import asyncio
import copy
import dataclasses
import gzip
import json
import random
import re
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "fhir_examples"
PRIMER = "neurology-radiculopathy--seven-weeks"
"""The example whose card the feedback cases are about (it answers one card, with a suggestion)."""
CARD, SUGGESTION, ADMIN = "@CARD@", "@SUGGESTION@", "@ADMIN@"
JSON_HEADERS = {"Content-Type": "application/json"}
MAX_BODY_BYTES = 5_000_000
"""The service's default CDS_MAX_BODY_BYTES: the big-body cases sit on either side of it."""
UCUM = "http://unitsofmeasure.org"


@dataclass(frozen=True)
class HostileCase:
    """One request: what to send, and a label of the kind of hostility (for the tallies)."""

    kind: str
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    """Sent as latin-1 (the bytes of an HTTP header)."""
    body: bytes = b""
    note: str = ""
    """What was changed, to reproduce a failure."""
    chunked: bool = False
    """Send the body with Transfer-Encoding: chunked (no Content-Length)."""


@dataclass(frozen=True)
class Result:
    case: HostileCase
    status: int | None
    """None when no answer came (the connection failed or timed out)."""
    problem: str | None
    """Why this answer fails the run: a 5xx, no answer, an error that is no OperationOutcome."""
    answer: bytes = b""
    """The start of the answer's body."""
    resent: bool = False
    """Sent twice: the server had closed the kept-alive connection the first try went on."""


@dataclass
class Report:
    results: list[Result] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def by_status(self) -> Counter[str]:
        return Counter(_status_label(r) for r in self.results)

    @property
    def by_kind(self) -> dict[str, Counter[str]]:
        kinds: dict[str, Counter[str]] = {}
        for result in self.results:
            kinds.setdefault(result.case.kind, Counter())[_status_label(result)] += 1
        return kinds

    @property
    def failures(self) -> list[Result]:
        return [r for r in self.results if r.problem is not None]

    @property
    def server_errors(self) -> list[Result]:
        return [r for r in self.results if r.status is None or r.status >= 500]


def _status_label(result: Result) -> str:
    return "no answer" if result.status is None else str(result.status)


# --- Encoding -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """JSON text put as is where a value goes: NaN, 1e400, a 5000-digit integer, deep nesting."""

    text: str


def encode(document: Any, ascii_only: bool = True) -> bytes:
    """JSON bytes of `document`, its `Raw` values spliced in. With `ascii_only` a lone surrogate
    is escaped (`\\ud800`); without, it is written as the invalid UTF-8 bytes it would be."""
    raws: list[str] = []

    def placeholders(value: Any) -> Any:
        if isinstance(value, Raw):
            raws.append(value.text)
            return f"@@RAW{len(raws) - 1}@@"
        if isinstance(value, dict):
            return {key: placeholders(item) for key, item in value.items()}
        if isinstance(value, list):
            return [placeholders(item) for item in value]
        return value

    text = json.dumps(placeholders(document), ensure_ascii=ascii_only, allow_nan=True)
    for index, raw in enumerate(raws):
        text = text.replace(f'"@@RAW{index}@@"', raw, 1)
    return text.encode("utf-8", "surrogatepass")


def _deep(depth: int, mapping: bool) -> Raw:
    if mapping:
        return Raw('{"a":' * depth + "1" + "}" * depth)
    return Raw("[" * depth + "]" * depth)


# --- The examples and where things are in them ----------------------------------------------


@dataclass(frozen=True)
class Example:
    name: str
    request: dict[str, Any]

    @property
    def hook(self) -> str:
        return str(self.request["hook"])


@cache
def examples() -> tuple[Example, ...]:
    return tuple(
        Example(path.stem, json.loads(path.read_text())) for path in sorted(EXAMPLES.glob("*.json"))
    )


def _example(rng: random.Random, hooks: Iterable[str] | None = None) -> Example:
    wanted = set(hooks) if hooks is not None else None
    pool = [e for e in examples() if wanted is None or e.hook in wanted]
    return rng.choice(pool)


def _fresh(rng: random.Random, hooks: Iterable[str] | None = None) -> dict[str, Any]:
    return copy.deepcopy(_example(rng, hooks).request)


JsonPath = tuple[str | int, ...]


def json_paths(value: Any, path: JsonPath = ()) -> list[JsonPath]:
    """Every member's path in a JSON document."""
    found = [path] if path else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += json_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += json_paths(item, (*path, index))
    return found


def get_member(document: Any, path: JsonPath) -> Any:
    for step in path:
        document = document[step]
    return document


def set_member(document: Any, path: JsonPath, value: Any) -> None:
    get_member(document, path[:-1])[path[-1]] = value


def _resources(request: dict[str, Any]) -> list[dict[str, Any]]:
    """Every resource in the prefetch and the draft orders (bundles and their entries)."""
    found: list[dict[str, Any]] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if isinstance(value.get("resourceType"), str):
                found.append(value)
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(request.get("prefetch"))
    walk(request.get("context", {}).get("draftOrders"))
    return found


def _of_type(request: dict[str, Any], *types: str) -> list[dict[str, Any]]:
    return [r for r in _resources(request) if r["resourceType"] in types]


def _patient_id(request: dict[str, Any]) -> str:
    return str(request.get("context", {}).get("patientId", "unknown"))


def _bundle(request: dict[str, Any], key: str) -> list[Any]:
    """The entry list of the prefetch search Bundle `key` (made when absent or not one)."""
    prefetch = request.setdefault("prefetch", {})
    bundle = prefetch.get(key)
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        bundle = prefetch[key] = {"resourceType": "Bundle", "type": "searchset", "entry": []}
    entries = bundle.setdefault("entry", [])
    assert isinstance(entries, list)
    return entries


def _back_pain(request: dict[str, Any], onset: str = "2026-10-20") -> dict[str, Any]:
    condition = {
        "resourceType": "Condition",
        "id": "hostile-c",
        "clinicalStatus": {"coding": [{"code": "active"}]},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "279039007"}]},
        "subject": {"reference": f"Patient/{_patient_id(request)}"},
        "onsetDateTime": onset,
    }
    _bundle(request, "conditions").append({"resource": condition})
    return condition


def _conditions(request: dict[str, Any]) -> list[dict[str, Any]]:
    return _of_type(request, "Condition") or [_back_pain(request)]


def _codings(request: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for path in json_paths(request):
        value = get_member(request, path)
        if path and path[-1] == "coding" and isinstance(value, list):
            found += [c for c in value if isinstance(c, dict)]
    return found


_DATE_LIKE = re.compile(r"^[0-9]{4}(-[0-9]{2})?")
DATE_FIELDS: dict[str, list[str]] = {
    "Patient": ["birthDate", "deceasedDateTime"],
    "Condition": [
        "onsetDateTime",
        "abatementDateTime",
        "recordedDate",
        "onsetPeriod.start",
        "onsetPeriod.end",
        "abatementPeriod.start",
        "abatementPeriod.end",
    ],
    "Observation": [
        "effectiveDateTime",
        "effectiveInstant",
        "issued",
        "effectivePeriod.start",
        "effectivePeriod.end",
    ],
    "ServiceRequest": ["authoredOn"],
    "Procedure": ["performedDateTime", "performedPeriod.start", "performedPeriod.end"],
    "MedicationRequest": ["authoredOn"],
    "MedicationStatement": [
        "effectiveDateTime",
        "dateAsserted",
        "effectivePeriod.start",
        "effectivePeriod.end",
    ],
}
"""Where the triage reads a date, per resource type."""


def _set_member(resource: dict[str, Any], dotted: str, value: Any) -> None:
    head, _, tail = dotted.partition(".")
    if not tail:
        resource[head] = value
        return
    if not isinstance(resource.get(head), dict):
        resource[head] = {}
    resource[head][tail] = value


def _date_target(rng: random.Random, request: dict[str, Any]) -> tuple[dict[str, Any], str]:
    resources = _of_type(request, *DATE_FIELDS) or _conditions(request)
    resource = rng.choice(resources)
    return resource, rng.choice(DATE_FIELDS[resource["resourceType"]])


def _pick(variants: list[Any], n: int) -> Any:
    """The variants in turn, so a kind run often enough sends every one of them."""
    return variants[n % len(variants)]


def _call(kind: str, request: Any, note: str, hook: str | None = None) -> HostileCase:
    """POST `request` to its hook's service (or `hook`), as escaped JSON."""
    service = hook or (request.get("hook") if isinstance(request, dict) else None)
    if not isinstance(service, str) or not re.fullmatch(r"[a-z-]{1,40}", service):
        service = "patient-view"
    return HostileCase(
        kind, "POST", f"/cds-services/{service}", JSON_HEADERS, encode(request), note
    )


def _feedback_case(kind: str, body: Any, note: str, service: str = "patient-view") -> HostileCase:
    return HostileCase(
        kind, "POST", f"/cds-services/{service}/feedback", JSON_HEADERS, encode(body), note
    )


_DROP = object()
"""A member `_feedback_item` leaves out."""


def _feedback_item(**changes: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "card": CARD,
        "outcome": "accepted",
        "acceptedSuggestions": [{"id": SUGGESTION}],
        "outcomeTimestamp": "2026-11-01T10:15:00Z",
    }
    for key, value in changes.items():
        if value is _DROP:
            item.pop(key, None)
        else:
            item[key] = value
    return item


# --- The kinds ------------------------------------------------------------------------------

Mutator = Callable[[random.Random, int], HostileCase]
KINDS: dict[str, tuple[Mutator, float]] = {}
"""Each kind's case maker and its weight in the mix."""


def hostile_kind(name: str, weight: float = 1.0) -> Callable[[Mutator], Mutator]:
    def register(make: Mutator) -> Mutator:
        KINDS[name] = (make, weight)
        return make

    return register


EXTREME_DATES: list[Any] = [
    "0001-01-01T00:00:00+14:00",
    "0001-01-01T13:59:59+14:00",
    "9999-12-31T23:59:59-14:00",
    "9999-12-31T10:00:00-13:59",
    "9999-12-31T23:59:59.999999999-14:00",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:60Z",
    "0001-01-01",
    "9999-12-31",
    "0001",
    "9999",
    "9999-12",
    "0000-01-01",
    "0000",
    "2026-02-29",
    "2024-02-30",
    "2026-11-31",
    "2026-11-01T24:00:00Z",
    "2026-11-01T23:59:60+14:00",
    "2026-11-01T10:00:00+14:01",
    "2026-11-01T10:00:00-14:00",
    "2026-11-01T10:00:00",
    "2026-11-01T10:00:00.1234567890Z",
    "2026-11-01T10:00Z",
    "2026-11-01T10:00:00+00:00:00",
    "+2026-11-01",
    "-2026-11-01",
    "20261101",
    "2026-W44-1",
    " 2026-11-01",
    "2026-11-01\u0000",
    "\u0968\u0966\u0968\u096c-\u0967\u0967-\u0966\u0967",  # 2026-11-01 in Devanagari digits
    "",
    Raw("20261101"),
    None,
    True,
    ["2026-11-01"],
    {"start": "2026"},
]


@hostile_kind("date-extreme")
def _date_extreme(rng: random.Random, n: int) -> HostileCase:
    """A date that does not exist or whose offset crosses year 1 or 9999, anywhere one is read."""
    request = _fresh(rng)
    value = _pick(EXTREME_DATES, n)
    existing = [
        p
        for p in json_paths(request)
        if isinstance(v := get_member(request, p), str) and _DATE_LIKE.match(v)
    ]
    if existing and rng.random() < 0.4:
        path = rng.choice(existing)
        set_member(request, path, value)
        return _call("date-extreme", request, f"{'.'.join(map(str, path))} = {value!r}")
    resource, member = _date_target(rng, request)
    _set_member(resource, member, value)
    return _call("date-extreme", request, f"{resource['resourceType']}.{member} = {value!r}")


FUTURE_DATES = [
    "2026-11-02",
    "2027-01-01",
    "2099-12-31",
    "9999-12-31",
    "2026-11-02T00:00:00+14:00",
    "2026-11-01T23:59:59-14:00",
    str(time.gmtime().tm_year + 1),
]


@hostile_kind("future-date")
def _future_date(rng: random.Random, n: int) -> HostileCase:
    """Onset, birth and other dates after the evaluation day (and birth after onset)."""
    request = _fresh(rng)
    value = _pick(FUTURE_DATES, n)
    patients = _of_type(request, "Patient")
    choice = rng.randrange(3)
    if choice == 0 and patients:
        patients[0]["birthDate"] = value
        note = f"Patient.birthDate = {value}"
    elif choice == 1:
        condition = rng.choice(_conditions(request))
        member = rng.choice(["onsetDateTime", "onsetPeriod.start", "recordedDate"])
        _set_member(condition, member, value)
        note = f"Condition.{member} = {value}"
    else:
        resource, member = _date_target(rng, request)
        _set_member(resource, member, value)
        note = f"{resource['resourceType']}.{member} = {value}"
    if patients and rng.random() < 0.3:
        patients[0]["birthDate"] = "2026-10-31"  # born after most onsets
        note += "; birthDate 2026-10-31"
    return _call("future-date", request, note)


AGE_VALUES: list[Any] = [
    Raw("1e6"),
    Raw("-3000"),
    Raw("NaN"),
    Raw("Infinity"),
    Raw("-Infinity"),
    "NaN",
    "Infinity",
    "-Infinity",
    "1e6",
    "-3000",
    Raw("1e308"),
    Raw("1e400"),
    Raw("-0"),
    Raw("150.0000001"),
    150,
    0,
    Raw("1e-400"),
    Raw("4.9e-324"),
    Raw("1" + "0" * 400),
    "",
    None,
    True,
    [],
    {},
]
AGE_UNITS: list[dict[str, Any]] = [
    {"unit": "a", "system": UCUM, "code": "a"},
    {"unit": "years"},
    {"code": "mo", "system": UCUM},
    {"code": "d", "system": UCUM},
    {"code": "min", "system": UCUM},
    {},
    {"unit": 5},
]


@hostile_kind("onset-age")
def _onset_age(rng: random.Random, n: int) -> HostileCase:
    """onsetAge or abatementAge of 1e6, -3000, NaN, Infinity (tokens and strings), huge ..."""
    request = _fresh(rng)
    condition = rng.choice(_conditions(request))
    member = rng.choice(["onsetAge", "onsetAge", "abatementAge"])
    value = _pick(AGE_VALUES, n)
    condition[member] = {"value": value, **rng.choice(AGE_UNITS)}
    if member == "onsetAge" and rng.random() < 0.5:
        for other in ("onsetDateTime", "onsetPeriod", "onsetString"):
            condition.pop(other, None)
    note = f"Condition.{member}.value = {value}"
    patients = _of_type(request, "Patient")
    if patients and rng.random() < 0.3:
        birth = rng.choice(["9999-12-31", "0001-01-01", "9990-06-01", "1875-01-01"])
        patients[0]["birthDate"] = birth
        note += f"; birthDate {birth}"
    return _call("onset-age", request, note)


TEMPERATURES: list[tuple[Any, Any, Any]] = [
    (101.3, "[degF]", "[degF]"),
    (101.3, "degF", None),
    (101.3, "°F", None),
    (101.3, None, "°F"),
    (38.5, "Cel", "Cel"),
    (38.5, "°C", None),
    (Raw("1e308"), "[degF]", "[degF]"),
    (Raw("-1e308"), "[degF]", "[degF]"),
    (Raw("1e308"), "Cel", "Cel"),
    (Raw("1e400"), "[degF]", "[degF]"),
    (Raw("NaN"), "[degF]", "[degF]"),
    ("1e308 [degF]", None, None),
    ("101.3", "[degF]", "[degF]"),
    (-459.67, "[degF]", "[degF]"),
    (-1000, "Cel", "Cel"),
    (310.0, "K", "K"),
    (0, "[degF]", "[degF]"),
    (101.3, "", ""),
    (101.3, "[degF]", "Cel"),
    (38.5, "F", "F"),
    (Raw("1e-320"), "[degF]", "[degF]"),
    (None, "[degF]", "[degF]"),
    (101.3, "°F\u0000", None),
    (Raw("1.7976931348623157e308"), "degF", "degF"),
]
TEMPERATURE_CODES = ["8310-5", "8331-1", "8333-7", "8332-9", "8328-7", "8310-5"]


@hostile_kind("temperature")
def _temperature(rng: random.Random, n: int) -> HostileCase:
    """Temperatures in degF, °F, K, 1e308 [degF], NaN ..."""
    request = _fresh(rng)
    value, unit, code = _pick(TEMPERATURES, n)
    quantity: dict[str, Any] = {"value": value}
    if unit is not None:
        quantity["unit"] = unit
    if code is not None:
        quantity |= {"code": code, "system": UCUM}
    loinc = rng.choice(TEMPERATURE_CODES)
    observation = {
        "resourceType": "Observation",
        "id": "hostile-temp",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
        "subject": {"reference": f"Patient/{_patient_id(request)}"},
        "effectiveDateTime": "2026-11-01T09:30:00Z",
        "valueQuantity": quantity,
    }
    _bundle(request, "observations").append({"resource": observation})
    if rng.random() < 0.5:
        _back_pain(request)
    return _call("temperature", request, f"{loinc} valueQuantity = {quantity}")


SURROGATES = ["\ud800", "\udfff", "\udc00\ud800", "a\ud800b", "\ud800\ud800", "\udbff"]
SURROGATE_PLACES = [
    "display",
    "text",
    "hook",
    "hookInstance",
    "patientId",
    "userId",
    "resourceType",
    "status",
    "date",
    "key",
    "unit",
    "reference",
    "clinicalStatus",
]


@hostile_kind("lone-surrogate")
def _lone_surrogate(rng: random.Random, n: int) -> HostileCase:
    """A lone UTF-16 surrogate, escaped in JSON (and sometimes raw), in a display or anywhere an
    error would echo it; and the legal neighbours (an escaped pair, a literal backslash-u)."""
    request = _fresh(rng)
    place = _pick(SURROGATE_PLACES, n)
    bad = rng.choice(SURROGATES)
    shape = rng.randrange(8)
    if shape == 6:
        bad = "\U0001f600"  # a valid pair: must be accepted
    elif shape == 7:
        bad = "\\ud800"  # a backslash then `ud800`: text, not an escape
    resources = _resources(request) or _conditions(request)
    context = request.setdefault("context", {})
    if place == "display":
        codings = _codings(request) or [{"code": "x"}]
        rng.choice(codings)["display"] = f"Low back pain {bad}"
    elif place == "text":
        rng.choice(_conditions(request))["code"] = {"text": bad}
    elif place in ("hook", "hookInstance"):
        request[place] = bad
    elif place in ("patientId", "userId"):
        context[place] = bad
    elif place == "resourceType":
        rng.choice(resources)["resourceType"] = bad
    elif place == "status":
        rng.choice(resources)["status"] = bad
    elif place == "date":
        resource, member = _date_target(rng, request)
        _set_member(resource, member, f"2026-11-01{bad}")
    elif place == "key":
        rng.choice(resources)[bad] = "x"
    elif place == "unit":
        _bundle(request, "observations").append(
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8310-5"}]},
                    "valueQuantity": {"value": 39, "unit": bad, "code": bad},
                }
            }
        )
    elif place == "reference":
        rng.choice(resources)["subject"] = {"reference": f"Patient/{bad}"}
    else:
        rng.choice(_conditions(request))["clinicalStatus"] = {"coding": [{"code": bad}]}
    raw = shape == 5
    note = f"{place} holds {bad!r}" + (" as raw bytes" if raw else "")
    return HostileCase(
        "lone-surrogate",
        "POST",
        f"/cds-services/{_example_hook(request)}",
        JSON_HEADERS,
        encode(request, ascii_only=not raw),
        note,
    )


def _example_hook(request: dict[str, Any]) -> str:
    hook = request.get("hook")
    return hook if hook in ("patient-view", "order-select", "order-sign") else "patient-view"


HOOK_INSTANCES: list[Any] = [
    "a" * 201,
    "a" * 200,
    "x" * 100_000,
    "abc\u0000def",
    "\u0000",
    "\t",
    "\n",
    "line\r\nbreak",
    "",
    " ",
    "é" * 200,
    "\U0001f600" * 200,
    "\U0001f600" * 101,
    "\u007f\u0085\u2028",
    "zero\u200bwidth",
    "'; DROP TABLE evaluations; --",
    5,
    Raw("1e400"),
    None,
    [],
    {},
]


@hostile_kind("hook-instance")
def _hook_instance(rng: random.Random, n: int) -> HostileCase:
    """hookInstance over 200 characters, with a NUL, empty, not a string ..."""
    request = _fresh(rng)
    value = _pick(HOOK_INSTANCES, n)
    request["hookInstance"] = value
    shown = (
        value if not isinstance(value, str) or len(value) < 40 else f"{value[:10]}...x{len(value)}"
    )
    return _call("hook-instance", request, f"hookInstance = {shown!r}")


WRONG_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1.5,
    "",
    "x",
    [],
    {},
    [None],
    {"": None},
    [[]],
    Raw("1e400"),
    "a" * 10_000,
    {"resourceType": "Bundle"},
    {"resourceType": "OperationOutcome"},
    {"resourceType": None},
    [1, 2, 3],
]


@hostile_kind("wrong-type")
def _wrong_type(rng: random.Random, n: int) -> HostileCase:
    """One member anywhere replaced by a value of another type."""
    request = _fresh(rng)
    path = rng.choice(json_paths(request))
    value = _pick(WRONG_VALUES, n)
    set_member(request, path, value)
    return _call("wrong-type", request, f"{'.'.join(map(str, path))} = {str(value)[:40]}")


HUGE_NUMBERS = [
    Raw("1" + "0" * 5000),
    Raw("-" + "9" * 400),
    Raw("1e400"),
    Raw("-1e400"),
    Raw("1e-400"),
    Raw("123456789012345678901234567890"),
    Raw("1.7976931348623157e308"),
    Raw("4.9e-324"),
    Raw("9223372036854775808"),
    Raw("18446744073709551616"),
    Raw("-9223372036854775809"),
    Raw("1E+2147483648"),
    Raw("0." + "0" * 10_000 + "1"),
    Raw("1" * 1000 + ".5"),
]


@hostile_kind("huge-number")
def _huge_number(rng: random.Random, n: int) -> HostileCase:
    """Numbers past float and 64-bit range where numbers are read (and where they are not)."""
    request = _fresh(rng)
    value = _pick(HUGE_NUMBERS, n)
    numeric = [
        p
        for p in json_paths(request)
        if isinstance(v := get_member(request, p), int | float) and not isinstance(v, bool)
    ]
    target = rng.randrange(5)
    if target == 0 and numeric:
        path = rng.choice(numeric)
        set_member(request, path, value)
        where = ".".join(map(str, path))
    elif target == 1:
        request["fhirAuthorization"] = {
            "access_token": "t",
            "token_type": "Bearer",
            "expires_in": value,
            "scope": "patient/*.read",
            "subject": "s",
        }
        where = "fhirAuthorization.expires_in"
    elif target == 2:
        rng.choice(_conditions(request))["onsetAge"] = {"value": value, "code": "a"}
        where = "Condition.onsetAge.value"
    elif target == 3:
        _bundle(request, "observations").append(
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8310-5"}]},
                    "effectiveDateTime": "2026-11-01",
                    "valueQuantity": {"value": value, "code": "[degF]", "system": UCUM},
                }
            }
        )
        where = "Observation.valueQuantity.value"
    else:
        request.setdefault("prefetch", {}).setdefault("conditions", {})
        _bundle(request, "conditions")
        request["prefetch"]["conditions"]["total"] = value
        where = "prefetch.conditions.total"
    return _call("huge-number", request, f"{where} = {value.text[:30]}")


@hostile_kind("deep-nesting", weight=0.7)
def _deep_nesting(rng: random.Random, n: int) -> HostileCase:
    """JSON nested 100,000 deep, and just under and over the parser's and Python's limits."""
    depth = _pick([100_000, 1023, 1024, 1025, 999, 990, 600, 300, 100_000], n)
    mapping = rng.random() < 0.5
    deep = _deep(depth, mapping)
    place = rng.randrange(7)
    request = _fresh(rng)
    if place == 0:
        body = deep.text.encode()
        note = f"the whole body, {depth} deep, objects={mapping}"
        return HostileCase(
            "deep-nesting", "POST", "/cds-services/patient-view", JSON_HEADERS, body, note
        )
    if place == 1:
        request.setdefault("prefetch", {})["extra"] = deep
    elif place == 2:
        rng.choice(_resources(request) or _conditions(request))["extension"] = deep
    elif place == 3:
        request.setdefault("context", {})["extra"] = deep
    elif place == 4:
        request["extension"] = {"org.example": deep}
    elif place == 5:
        feedback = {"feedback": [_feedback_item(extension=deep)]}
        return _feedback_case("deep-nesting", feedback, f"feedback[0].extension {depth} deep")
    else:
        rng.choice(_conditions(request))["code"] = {"coding": deep}
    return _call("deep-nesting", request, f"place {place}, {depth} deep, objects={mapping}")


EMPTY_BODIES = [b"", b" ", b"\n\n", b"null", b"{}", b"[]", b"0", b'""', b"true", b"\x00"]


@hostile_kind("empty-body")
def _empty_body(rng: random.Random, n: int) -> HostileCase:
    body = _pick(EMPTY_BODIES, n)
    path = rng.choice(
        [
            "/cds-services/patient-view",
            "/cds-services/order-sign",
            "/cds-services/patient-view/feedback",
        ]
    )
    return HostileCase("empty-body", "POST", path, JSON_HEADERS, body, repr(body))


@hostile_kind("non-json")
def _non_json(rng: random.Random, n: int) -> HostileCase:
    example = _example(rng)
    text = encode(example.request)
    variants: list[tuple[str, bytes, dict[str, str]]] = [
        ("open brace", b"{", {}),
        ("unterminated", b'{"hook": "patient-view"', {}),
        ("truncated", text[: rng.randrange(1, len(text))], {}),
        ("trailing garbage", text + b" garbage", {}),
        ("extra brace", text + b"}", {}),
        ("BOM", b"\xef\xbb\xbf" + text, {}),
        ("UTF-16", json.dumps(example.request).encode("utf-16"), {}),
        (
            "UTF-16 declared",
            json.dumps(example.request).encode("utf-16"),
            {"Content-Type": "application/json; charset=utf-16"},
        ),
        ("UTF-32", json.dumps(example.request).encode("utf-32"), {}),
        ("single quotes", text.replace(b'"', b"'"), {}),
        ("comment", b"/* hostile */" + text, {}),
        ("trailing comma", text[:-1] + b",}", {}),
        ("form", b"hook=patient-view&hookInstance=x", {}),
        ("xml", b'<Bundle xmlns="http://hl7.org/fhir"/>', {}),
        ("random bytes", rng.randbytes(1000), {}),
        ("invalid UTF-8", b"\xff\xfe\xfd", {}),
        ("latin-1 in a string", text.replace(b"Low back pain", b"Lumbago caf\xe9", 1), {}),
        ("raw NUL in a string", text.replace(b'"hook"', b'"ho\x00ok"', 1), {}),
        ("raw control in a string", text.replace(b'"active"', b'"act\x01ive"', 1), {}),
        ("top-level NaN", b"NaN", {}),
        ("top-level 1e400", b"1e400", {}),
        ("duplicate keys", b'{"hook": "nope", ' + text[1:], {}),
        ("gzip not declared", gzip.compress(text), {}),
        ("gzip declared", gzip.compress(text), {"Content-Encoding": "gzip"}),
        ("NUL bytes", b"\x00" * 100, {}),
    ]
    note, body, extra = _pick(variants, n)
    return HostileCase(
        "non-json",
        "POST",
        f"/cds-services/{example.hook}",
        {**JSON_HEADERS, **extra},
        body,
        f"{note} ({example.name})",
    )


CONTENT_TYPES: list[str | None] = [
    None,
    "text/plain",
    "application/xml",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/json; charset=latin-1",
    "application/json; charset=utf-16",
    "APPLICATION/JSON",
    "application/fhir+json",
    "application/fhir+json; fhirVersion=4.0",
    "application/json-patch+json",
    "application/jsonx",
    "application/json ; charset=utf-8",
    "application/json;;;",
    "*/*",
    "",
    "application/json, text/plain",
    "application/json; charset=\u00e9".encode().decode("latin-1"),
]


@hostile_kind("content-type")
def _content_type(rng: random.Random, n: int) -> HostileCase:
    example = _example(rng)
    media = _pick(CONTENT_TYPES, n)
    headers = {} if media is None else {"Content-Type": media}
    feedback = rng.random() < 0.2
    if feedback:
        path, body = "/cds-services/patient-view/feedback", encode({"feedback": [_feedback_item()]})
    else:
        path, body = f"/cds-services/{example.hook}", encode(example.request)
    if rng.random() < 0.3:
        headers["Accept"] = rng.choice(["application/xml", "text/html", "image/png", "*/*;q=0"])
    return HostileCase("content-type", "POST", path, headers, body, f"Content-Type {media!r}")


def _padded(request: dict[str, Any], size: int) -> bytes:
    """`request` with a padding member making its JSON exactly `size` bytes."""
    base = encode({**request, "padding": ""})
    return encode({**request, "padding": "x" * (size - len(base))})


@hostile_kind("big-body", weight=0.35)
def _big_body(rng: random.Random, n: int) -> HostileCase:
    """Bodies on either side of the 5 MB limit, declared or chunked; big strings and records."""
    request = _fresh(rng)
    path = f"/cds-services/{_example_hook(request)}"
    variant = _pick(
        [
            "over-limit",
            "at-limit",
            "over-limit-chunked",
            "chunked",
            "huge-display",
            "many-conditions",
            "many-observations",
            "huge-hook-instance",
            "feedback-4mb-comment",
            "feedback-over-limit",
        ],
        n,
    )
    chunked = variant in ("over-limit-chunked", "chunked")
    if variant == "over-limit":
        body = _padded(request, MAX_BODY_BYTES + 1)
    elif variant == "at-limit":
        body = _padded(request, MAX_BODY_BYTES)
    elif variant == "over-limit-chunked":
        body = _padded(request, 6_000_000)
    elif variant == "chunked":
        body = encode(request)
    elif variant == "huge-display":
        codings = _codings(request) or [{}]
        rng.choice(codings)["display"] = "Low back pain " * 300_000
        body = encode(request)
    elif variant in ("many-conditions", "many-observations"):
        key = "conditions" if variant == "many-conditions" else "observations"
        entries = _bundle(request, key)
        template = entries[0] if entries else {"resource": _back_pain(request)}
        size = len(encode(template))
        for index in range(min(4_500_000 // max(size, 1), 40_000)):
            entry = copy.deepcopy(template)
            if isinstance(entry.get("resource"), dict):
                entry["resource"]["id"] = f"copy-{index}"
            entries.append(entry)
        body = encode(request)
    elif variant == "huge-hook-instance":
        request["hookInstance"] = "h" * 4_900_000
        body = encode(request)
    elif variant == "feedback-4mb-comment":
        item = _feedback_item(
            outcome="overridden",
            acceptedSuggestions=_DROP,
            overrideReason={"userComment": "c" * 4_000_000},
            outcomeTimestamp=f"2026-11-01T10:{n % 60:02d}:00Z",
        )
        return _feedback_case("big-body", {"feedback": [item]}, variant)
    else:
        item = _feedback_item(padding="p" * (MAX_BODY_BYTES + 10))
        return _feedback_case("big-body", {"feedback": [item]}, variant)
    return HostileCase("big-body", "POST", path, JSON_HEADERS, body, variant, chunked)


PREFETCH_VALUES: list[Any] = [
    None,
    5,
    [],
    "",
    "x",
    {},
    {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "not-found"}],
    },
    {"resourceType": "Bundle"},
    {"resourceType": "Bundle", "entry": None},
    {"resourceType": "Bundle", "entry": [None]},
    {"resourceType": "Bundle", "entry": [5]},
    {"resourceType": "Bundle", "entry": [{"resource": None}]},
    {"resourceType": "Bundle", "entry": [{"resource": {}}]},
    {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Patient"}}]},
    {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Unknown", "x": 1}}]},
    {
        "resourceType": "Bundle",
        "link": [{"relation": "next", "url": "http://127.0.0.1:9/fhir?page=2"}],
        "entry": [],
    },
    {
        "resourceType": "Bundle",
        "entry": [
            {
                "search": {"mode": "outcome"},
                "resource": {"resourceType": "OperationOutcome", "issue": []},
            }
        ],
    },
    {"resourceType": "Patient"},
    {"resourceType": 5},
    {"resourceType": "Condition", "subject": {"reference": "Patient/x"}},
]
PREFETCH_KEYS = [
    "patient",
    "conditions",
    "observations",
    "procedures",
    "medications",
    "statements",
    "referrals",
    "unknown-key",
]


@hostile_kind("prefetch-value")
def _prefetch_value(rng: random.Random, n: int) -> HostileCase:
    """Prefetch values null, 5, [], an OperationOutcome, half a Bundle; prefetch itself odd."""
    request = _fresh(rng)
    if n % 7 == 6:
        value: Any = rng.choice([None, [], 5, "x", {}])
        request["prefetch"] = value
        return _call("prefetch-value", request, f"prefetch = {value!r}")
    if n % 7 == 5:
        key = rng.choice(PREFETCH_KEYS[:3])
        request.get("prefetch", {}).pop(key, None)
        return _call("prefetch-value", request, f"prefetch.{key} removed")
    key = rng.choice(PREFETCH_KEYS)
    value = _pick(PREFETCH_VALUES, n // 7 * 5 + n % 7)
    request.setdefault("prefetch", {})[key] = copy.deepcopy(value)
    return _call("prefetch-value", request, f"prefetch.{key} = {str(value)[:60]}")


def _service_request(patient: str, **changes: Any) -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "id": "sr-hostile",
        "status": "draft",
        "intent": "order",
        "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "72148"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "authoredOn": "2026-11-01",
    } | changes


@hostile_kind("draft-orders")
def _draft_orders(rng: random.Random, n: int) -> HostileCase:
    """draftOrders that are no Bundle, hold odd entries, or name another patient; selections."""
    request = _fresh(rng)
    patient = _patient_id(request)
    hook = request["hook"]
    if hook == "patient-view":
        hook = request["hook"] = rng.choice(["order-sign", "order-select"])
        if hook == "order-select":
            request["context"]["selections"] = ["ServiceRequest/sr-hostile"]
    order = _service_request(patient)
    variants: list[Any] = [
        None,
        5,
        [],
        "x",
        {},
        order,
        {"resourceType": "Bundle"},
        {"resourceType": "Bundle", "entry": None},
        {"resourceType": "Bundle", "entry": [None]},
        {"resourceType": "Bundle", "entry": [5]},
        {"resourceType": "Bundle", "entry": [{"resource": None}]},
        {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "ServiceRequest"}}]},
        {
            "resourceType": "Bundle",
            "entry": [
                {
                    "resource": {
                        "resourceType": "MedicationRequest",
                        "status": "draft",
                        "intent": "order",
                        "subject": {"reference": f"Patient/{patient}"},
                        "medicationCodeableConcept": {"coding": [{"code": "7052"}]},
                    }
                }
            ],
        },
        {
            "resourceType": "Bundle",
            "entry": [{"resource": _service_request(patient, id=f"sr-{i}")} for i in range(1000)],
        },
        {"resourceType": "OperationOutcome", "issue": []},
        {
            "resourceType": "Bundle",
            "entry": [{"resource": {"resourceType": "Bundle", "entry": [{"resource": order}]}}],
        },
        {"resourceType": "Bundle", "entry": [{"resource": _service_request("someone-else")}]},
        {"resourceType": "Bundle", "entry": [{"resource": _service_request(patient, status=5)}]},
        {"resourceType": "Bundle", "entry": [{"resource": _service_request(patient, id="a b")}]},
    ]
    selections: list[Any] = [
        [],
        [""],
        [5],
        ["ServiceRequest/unknown"],
        "ServiceRequest/sr-hostile",
        None,
        ["a" * 10_000],
        ["ServiceRequest/sr-hostile"] * 1000,
    ]
    if n % 4 == 3 and hook == "order-select":
        value = _pick(selections, n // 4)
        request["context"]["selections"] = value
        return _call("draft-orders", request, f"selections = {str(value)[:60]}")
    value = _pick(variants, n)
    request["context"]["draftOrders"] = value
    return _call("draft-orders", request, f"{hook} draftOrders = {str(value)[:80]}")


OTHER_REFERENCES: list[Any] = [
    "Patient/someone-else",
    "Patient/",
    "Patient",
    "urn:uuid:7038bb79-e95f-5f4d-8aa2-a2f9e45f52a3",
    "#contained",
    "Patient/someone-else/_history/1",
    "http://other.example/fhir/Patient/{pid}",
    "Group/1",
    "Patient/{pid}/../someone-else",
    None,
    5,
]


@hostile_kind("other-patient")
def _other_patient(rng: random.Random, n: int) -> HostileCase:
    """Resources about another patient, a Patient that is not the context's, and the like."""
    request = _fresh(rng)
    patient = _patient_id(request)
    variant = n % 4
    if variant == 0:
        patients = _of_type(request, "Patient")
        if patients:
            patients[0]["id"] = "someone-else"
        note = "prefetch.patient is another patient"
    elif variant == 1:
        request["context"]["patientId"] = "someone-else"
        note = "context.patientId names another patient"
    elif variant == 2:
        for resource in _resources(request):
            if "subject" in resource:
                resource["subject"] = {"reference": "Patient/someone-else"}
        note = "every resource is about another patient"
    else:
        reference = _pick(OTHER_REFERENCES, n // 4)
        if isinstance(reference, str):
            reference = reference.replace("{pid}", patient)
        subjects = [r for r in _resources(request) if "subject" in r] or _conditions(request)
        rng.choice(subjects)["subject"] = {"reference": reference}
        note = f"a subject.reference = {reference!r}"
    return _call("other-patient", request, note)


@hostile_kind("hook-path")
def _hook_path(rng: random.Random, n: int) -> HostileCase:
    """The wrong hook for the service, unknown services, odd paths and methods."""
    example = _example(rng)
    body = encode(example.request)
    variants: list[tuple[str, str, dict[str, str]]] = [
        (
            "POST",
            "/cds-services/order-sign"
            if example.hook != "order-sign"
            else "/cds-services/patient-view",
            {},
        ),
        ("POST", "/cds-services/unknown-service", {}),
        ("POST", "/cds-services/", {}),
        ("POST", "/cds-services", {}),
        ("POST", "/cds-services//patient-view", {}),
        ("POST", f"/cds-services/{example.hook}/", {}),
        ("POST", f"/cds-services/{example.hook}/feedback/extra", {}),
        ("POST", "/cds-services/%00", {}),
        ("POST", f"/cds-services/{example.hook}%00", {}),
        ("POST", "/cds-services/..%2F..%2Fpyproject.toml", {}),
        ("POST", "/cds-services/" + "a" * 5000, {}),
        ("POST", "/cds-services/PATIENT-VIEW", {}),
        ("POST", f"/cds-services/{example.hook}?x=%ff%00&y", {}),
        ("GET", f"/cds-services/{example.hook}", {}),
        ("PUT", f"/cds-services/{example.hook}", {}),
        ("DELETE", f"/cds-services/{example.hook}", {}),
        ("PATCH", f"/cds-services/{example.hook}", {}),
        ("GET", f"/cds-services/{example.hook}/feedback", {}),
        ("POST", "/cds-services/%E2%80%AE", {}),
        ("POST", f"/cds-services/{example.hook}", {"Origin": "https://evil.example"}),
    ]
    method, path, extra = _pick(variants, n)
    if n % len(variants) == 0:  # the hook in the body does not match the service
        request = {**example.request, "hook": rng.choice(["order-sign", "", "PATIENT-VIEW", 5])}
        body = encode(request)
    return HostileCase(
        "hook-path", method, path, {**JSON_HEADERS, **extra}, body, f"{method} {path[:80]}"
    )


FHIR_SERVERS: list[Any] = [
    "http://127.0.0.1:1/fhir",
    "http://169.254.169.254/latest/meta-data",
    "file:///etc/passwd",
    "ftp://example.org/fhir",
    "not a url",
    "http://[::1]/fhir",
    "http://" + "a" * 3000 + ".example/fhir",
    "http://user:pass@example.org/fhir",
    "https://example.org/fhir?x=\u0000",
    5,
    "",
    None,
]


@hostile_kind("fhir-server")
def _fhir_server(rng: random.Random, n: int) -> HostileCase:
    """Prefetch left out and a fhirServer the service must not (or cannot) fetch from."""
    request = _fresh(rng)
    request["fhirServer"] = _pick(FHIR_SERVERS, n)
    prefetch = request.get("prefetch", {})
    for key in rng.sample(sorted(prefetch), k=rng.randrange(len(prefetch) + 1)):
        prefetch.pop(key)
    if rng.random() < 0.5:
        request["fhirAuthorization"] = {
            "access_token": rng.choice(["t", "tok\u00e9n", "a" * 9000, "\r\nX: y"]),
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "s",
        }
    return _call("fhir-server", request, f"fhirServer = {str(request['fhirServer'])[:60]}")


AUTHORIZATIONS: list[Any] = [
    {"token_type": "bearer"},
    {"token_type": "MAC"},
    {"expires_in": "300"},
    {"expires_in": -1},
    {"expires_in": Raw("1e400")},
    {"expires_in": Raw("9" * 50)},
    {"expires_in": None},
    {"scope": ""},
    {"access_token": "a" * 1_000_000},
    {"access_token": "\u0000"},
    {"subject": _DROP},
    {"extra": {"nested": [1, 2]}},
]


@hostile_kind("fhir-authorization")
def _fhir_authorization(rng: random.Random, n: int) -> HostileCase:
    request = _fresh(rng)
    if n % 5 == 4:
        value: Any = rng.choice([[], "x", 5, {}, None])
    else:
        value = {
            "access_token": "t",
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "s",
        }
        for key, item in _pick(AUTHORIZATIONS, n).items():
            if item is _DROP:
                value.pop(key)
            else:
                value[key] = item
    request["fhirAuthorization"] = value
    return _call("fhir-authorization", request, f"fhirAuthorization = {str(value)[:80]}")


TIMESTAMPS: list[Any] = [
    "2026-11-01T10:15:00Z",
    "2026-11-01T10:15:00",
    "0001-01-01T00:00:00+14:00",
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00-14:00",
    "9999-12-31T23:59:59-14:00",
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:59.999999+14:00",
    "2026-11-01",
    "2026-11-01T10:15:00+25:00",
    "2026-11-01T10:15:00+14:01",
    "2026-11-01T10:15:00.1234567890123Z",
    "2026-11-01T25:00:00Z",
    "",
    " ",
    "now",
    0,
    Raw("1e400"),
    -1,
    1798000000,
    Raw("1" + "0" * 30),
    Raw("-" + "9" * 20),
    "2026-11-01T10:15:00\u0000Z",
    "2026-11-01t10:15:00z",
    "2026-11-01 10:15:00Z",
    "20261101T101500Z",
    "2026-11-01T10:15:00-00:00",
    "+002026-11-01T10:15:00Z",
    "2026-11-01T10:15:00\ud800Z",
    None,
    [],
]


@hostile_kind("feedback-timestamp")
def _feedback_timestamp(rng: random.Random, n: int) -> HostileCase:
    """outcomeTimestamp variants, on feedback for a real card (so the store is reached)."""
    value = _pick(TIMESTAMPS, n)
    if rng.random() < 0.5:
        item = _feedback_item(outcomeTimestamp=value)
    else:
        item = _feedback_item(
            outcome="overridden",
            acceptedSuggestions=_DROP,
            overrideReason={"userComment": "seen"},
            outcomeTimestamp=value,
        )
    return _feedback_case("feedback-timestamp", {"feedback": [item]}, f"outcomeTimestamp {value}")


CARD_IDS: list[Any] = [
    "\u0000",
    f"{CARD}\u0000",
    "a\u0000b",
    "a" * 201,
    "a" * 65,
    "",
    " ",
    f" {CARD}",
    5,
    None,
    [],
    {"uuid": CARD},
    "\ud800",
    "00000000-0000-0000-0000-000000000000",
    "' OR 1=1 --",
    "%",
    "\u202e",
    f"{CARD}\n",
]


@hostile_kind("feedback-card")
def _feedback_card(rng: random.Random, n: int) -> HostileCase:
    """A NUL and other oddities in the card id feedback is about."""
    value = _pick(CARD_IDS, n)
    service = rng.choice(["patient-view", "patient-view", "order-sign", "unknown"])
    body = {"feedback": [_feedback_item(card=value)]}
    return _feedback_case("feedback-card", body, f"card = {value!r}", service)


SUGGESTIONS: list[Any] = [
    [{"id": SUGGESTION, "extra": 1}],
    [{"id": SUGGESTION, "padding": "x" * 100_000}],
    [{"id": SUGGESTION, "nested": {"a": [{"b": None}]}}],
    [{"id": 5}],
    [{}],
    [{"id": ""}],
    [{"id": "not-a-suggestion-we-made"}],
    [],
    None,
    "x",
    [None],
    [{"id": SUGGESTION}] * 1000,
    [{"id": SUGGESTION, "\ud800": 1}],
    [{"id": SUGGESTION, "": ""}],
    {"id": SUGGESTION},
]


@hostile_kind("feedback-suggestions")
def _feedback_suggestions(rng: random.Random, n: int) -> HostileCase:
    """Unknown members (and wrong types) in acceptedSuggestions and around them."""
    value = _pick(SUGGESTIONS, n)
    item = _feedback_item(
        acceptedSuggestions=value, outcomeTimestamp=f"2026-11-01T11:{n % 60:02d}:00Z"
    )
    if rng.random() < 0.3:
        item["unknownMember"] = {"anything": [1, 2, 3]}
    body: dict[str, Any] = {"feedback": [item]}
    if rng.random() < 0.2:
        body["extra"] = "top-level member"
    return _feedback_case("feedback-suggestions", body, f"acceptedSuggestions = {str(value)[:60]}")


@hostile_kind("feedback-shape")
def _feedback_shape(rng: random.Random, n: int) -> HostileCase:
    """Feedback bodies of the wrong shape, outcomes and override reasons of the wrong kind."""
    overridden = {"outcome": "overridden", "acceptedSuggestions": _DROP}
    variants: list[Any] = [
        {},
        {"feedback": []},
        {"feedback": None},
        {"feedback": {}},
        {"feedback": "x"},
        {"feedback": [None]},
        {"feedback": [5]},
        [],
        {"feedback": [_feedback_item()] * 1000},
        {"feedback": [_feedback_item(outcome="ignored")]},
        {"feedback": [_feedback_item(outcome="")]},
        {"feedback": [_feedback_item(outcome=5)]},
        {"feedback": [_feedback_item(outcome="ACCEPTED")]},
        {"feedback": [_feedback_item(outcome="overridden")]},
        {"feedback": [_feedback_item(**overridden, overrideReason={})]},
        {"feedback": [_feedback_item(**overridden, overrideReason={"reason": {}})]},
        {"feedback": [_feedback_item(**overridden, overrideReason={"reason": {"code": ""}})]},
        {"feedback": [_feedback_item(**overridden, overrideReason={"userComment": 5})]},
        {"feedback": [_feedback_item(**overridden, overrideReason="x")]},
        {
            "feedback": [
                _feedback_item(
                    **overridden,
                    overrideReason={"reason": {"code": "x", "system": 5}, "userComment": "y"},
                )
            ]
        },
        {
            "feedback": [
                _feedback_item(**overridden, overrideReason={"userComment": "a\u0000b"}),
            ]
        },
        {
            "feedback": [
                _feedback_item(
                    **overridden,
                    overrideReason={"reason": {"code": "c\u0000", "display": "\u0000"}},
                )
            ]
        },
        {"feedback": [_feedback_item(card="unknown"), _feedback_item()]},
    ]
    service = rng.choice(["patient-view", "patient-view", "order-select"])
    value = _pick(variants, n)
    return _feedback_case("feedback-shape", value, f"variant {n % len(variants)}", service)


DISPLAYS = [
    "\u0000",
    "Low back pain\u0000",
    "\u0001\u001f",
    "\u202eniap kcab woL",
    "](javascript:alert(1))",
    "<script>alert(1)</script><img src=x onerror=alert(1)>",
    "x" * 100_000,
    "e\u0301" * 1000,
    "\uffff",
    "\ufeff",
    "\U0010ffff",
    "%s%s%n{0}{{context.patientId}}${jndi:ldap://x}",
    "' OR 1=1 --",
    "\r\nX-Injected: 1",
    "\\",
    '"',
]
STRING_PLACES = ["display", "code", "system", "text", "unit", "userId", "encounterId", "type"]


@hostile_kind("strings")
def _strings(rng: random.Random, n: int) -> HostileCase:
    """Control characters, markup, bidi overrides and long text in the strings cards echo."""
    request = _fresh(rng)
    value = _pick(DISPLAYS, n)
    place = rng.choice(STRING_PLACES)
    codings = _codings(request) or [{}]
    if place in ("display", "code", "system"):
        coding = rng.choice(codings)
        coding[place] = (coding.get(place) or "") + value if place == "display" else value
    elif place == "text":
        rng.choice(_conditions(request))["code"] = {"text": value}
    elif place == "unit":
        for observation in _of_type(request, "Observation"):
            if isinstance(observation.get("valueQuantity"), dict):
                observation["valueQuantity"]["unit"] = value
    elif place in ("userId", "encounterId"):
        request["context"][place] = value
    else:
        _bundle(request, "conditions")
        request["prefetch"]["conditions"]["type"] = value
    return _call("strings", request, f"{place} = {value[:40]!r}")


IDS: list[Any] = ["a b", "a" * 65, "", 5, "\u0000", "../x", "x/y", None, "é", "a" * 64, "-", "."]


@hostile_kind("ids")
def _ids(rng: random.Random, n: int) -> HostileCase:
    request = _fresh(rng)
    value = _pick(IDS, n)
    if rng.random() < 0.4:
        request["context"]["patientId"] = value
        note = f"context.patientId = {value!r}"
    else:
        resource = rng.choice(_resources(request) or _conditions(request))
        resource["id"] = value
        note = f"{resource['resourceType']}.id = {value!r}"
    return _call("ids", request, note)


STATUSES: list[Any] = [
    {"coding": [{"code": "unknown"}]},
    {"coding": [{"code": ""}]},
    {"coding": [{"code": None}]},
    {"coding": [{"code": 5}]},
    {"coding": [{"code": "ACTIVE"}]},
    {"coding": [{"code": "active\u0000"}]},
    {"coding": [{"code": "active"}, {"code": "resolved"}]},
    {"coding": []},
    {"coding": None},
    [],
    "active",
    None,
]


@hostile_kind("status-codes")
def _status_codes(rng: random.Random, n: int) -> HostileCase:
    request = _fresh(rng)
    value = _pick(STATUSES, n)
    if rng.random() < 0.6:
        member = rng.choice(["clinicalStatus", "verificationStatus"])
        rng.choice(_conditions(request))[member] = value
        note = f"Condition.{member} = {value}"
    else:
        resources = _of_type(
            request, "Observation", "MedicationRequest", "MedicationStatement", "Procedure"
        ) or _conditions(request)
        resource = rng.choice(resources)
        status = rng.choice(["", "unknown-status", None, 5, "FINAL", ["final"]])
        resource["status"] = status
        note = f"{resource['resourceType']}.status = {status!r}"
    return _call("status-codes", request, note)


@hostile_kind("headers")
def _headers(rng: random.Random, n: int) -> HostileCase:
    """Odd request ids, authorization headers (ignored with authentication off), Host, Accept."""
    example = _example(rng)
    variants: list[dict[str, str]] = [
        {"X-Request-ID": "a" * 5000},
        {"X-Request-ID": "a b c"},
        {"X-Request-ID": "../../<script>"},
        {"X-Request-ID": ""},
        {"Authorization": "Bearer " + "a" * 6000},
        {"Authorization": "Basic Zm9vOmJhcg=="},
        {"Authorization": "Bearer a.b.c"},
        {"Authorization": ""},
        {"Host": "evil.example"},
        {"Host": "evil.example:99999"},
        {"Host": "[::1"},
        {"Host": "a b"},
        {"X-Forwarded-Proto": "javascript"},
        {"X-Forwarded-Host": "evil.example"},
        {"Accept": "application/xml"},
        {"Accept-Encoding": "gzip;q=0, identity;q=0"},
        {"Expect": "100-continue"},
        {"Origin": "null"},
        {"Cookie": "a=" + "b" * 4000},
    ]
    extra = _pick(variants, n)
    return HostileCase(
        "headers",
        "POST",
        f"/cds-services/{example.hook}",
        {**JSON_HEADERS, **extra},
        encode(example.request),
        str({k: v[:40] for k, v in extra.items()}),
    )


@hostile_kind("get-endpoints")
def _get_endpoints(rng: random.Random, n: int) -> HostileCase:
    """The other endpoints, with odd paths, queries and review capabilities."""
    variants: list[tuple[str, str, dict[str, str]]] = [
        ("GET", "/cds-services", {}),
        ("GET", "/cds-services?x=%00", {}),
        ("GET", "/health", {}),
        ("GET", "/ready", {}),
        ("GET", "/metrics", {}),
        ("POST", "/ready", {}),
        ("GET", "/review/card", {}),
        ("GET", "/review/card", {"X-Card-Capability": ""}),
        ("GET", "/review/card", {"X-Card-Capability": "a" * 201}),
        ("GET", "/review/card", {"X-Card-Capability": f"{CARD}.wrong-secret"}),
        ("GET", "/review/card", {"X-Card-Capability": f"{CARD}."}),
        ("GET", "/review/card", {"X-Card-Capability": "."}),
        ("GET", "/review/card", {"X-Card-Capability": "' OR 1=1 --.x"}),
        ("GET", "/playground/examples/..%2Fpyproject", {}),
        ("GET", "/playground/examples/" + "a" * 3000, {}),
        ("GET", "/playground/examples/%00", {}),
        ("GET", "/static/../../pyproject.toml", {}),
        ("GET", "/static/%2e%2e/%2e%2e/pyproject.toml", {}),
        ("GET", "/static/" + "a" * 300, {}),
        ("GET", "/%00", {}),
        ("GET", "/nowhere?" + "q=1&" * 1000, {}),
        ("GET", "/openapi.json", {}),
        ("GET", "/admin/report", {"Authorization": "Bearer wrong"}),
        ("GET", "/admin/report", {}),
    ]
    method, path, headers = _pick(variants, n)
    return HostileCase("get-endpoints", method, path, headers, b"", f"{method} {path[:80]}")


ADMIN_QUERIES = [
    "",
    "?since=0001-01-01&until=9999-12-31",
    "?since=9999-12-31&until=0001-01-01",
    "?since=0000-01-01",
    "?since=2026-02-30",
    "?since=%00",
    "?since=99999-01-01",
    "?since=2026-11-01T00:00:00%2B14:00",
    "?since=&until=",
    "?since=2026-01-01&since=2026-02-01",
    "?since=9999-12-31",
    "?until=0001-01-01",
]
FEEDBACK_QUERIES = [
    "?limit=0",
    "?limit=1001",
    "?limit=1" + "0" * 30,
    "?offset=1" + "0" * 20,
    "?offset=9223372036854775808",
    "?offset=9223372036854775807",
    "?offset=-1",
    "?limit=abc",
    "?limit=1e3",
    "?since=0001-01-01&until=9999-12-31&limit=1000",
]


@hostile_kind("admin-api")
def _admin_api(rng: random.Random, n: int) -> HostileCase:
    """The committee API with the admin token (when the run has one) and hostile queries."""
    if n % 2:
        path = "/admin/feedback" + _pick(FEEDBACK_QUERIES, n // 2)
    else:
        path = "/admin/report" + _pick(ADMIN_QUERIES, n // 2)
    headers = {"Authorization": f"Bearer {ADMIN}"}
    return HostileCase("admin-api", "GET", path, headers, b"", path)


@hostile_kind("valid")
def _valid(rng: random.Random, n: int) -> HostileCase:
    """Unchanged examples and good feedback, between the hostile ones (they must still work)."""
    if n % 4 == 3:
        item = _feedback_item(outcomeTimestamp=f"2026-11-01T{n % 24:02d}:{n % 60:02d}:00+01:00")
        return _feedback_case("valid", {"feedback": [item]}, "good feedback")
    example = _example(rng)
    return _call("valid", example.request, example.name)


def cases(seed: int, count: int) -> Iterator[HostileCase]:
    """`count` hostile requests, the same ones for the same seed: every kind once first (in a
    seeded order), then kinds drawn by weight; each kind sends its variants in turn."""
    rng = random.Random(seed)
    names = list(KINDS)
    first = names[:]
    rng.shuffle(first)
    weights = [KINDS[name][1] for name in names]
    made: Counter[str] = Counter()
    for index in range(count):
        name = first[index] if index < len(first) else rng.choices(names, weights)[0]
        make, _ = KINDS[name]
        yield make(rng, made[name])
        made[name] += 1


# --- Sending --------------------------------------------------------------------------------


def problem(case: HostileCase, status: int, content_type: str, answer: bytes) -> str | None:
    """Why an answer fails the run, or None: a 5xx, or an error that is not a JSON
    OperationOutcome."""
    if status >= 500:
        return f"HTTP {status}"
    if status < 400:
        return None
    if not content_type.split(";")[0].strip().endswith("json"):
        return f"HTTP {status} answered as {content_type or 'no content type'}"
    try:
        document = json.loads(answer)
    except ValueError:
        return f"HTTP {status} with a body that is not JSON"
    if not isinstance(document, dict) or document.get("resourceType") != "OperationOutcome":
        return f"HTTP {status} with JSON that is not an OperationOutcome"
    if not document.get("issue"):
        return f"HTTP {status} OperationOutcome without an issue"
    return None


def materialise(case: HostileCase, card: str, suggestion: str, admin_token: str) -> HostileCase:
    """The case with the run's card, suggestion and admin token in place of its placeholders."""
    body = case.body
    if b"@" in body:
        body = body.replace(CARD.encode(), card.encode()).replace(
            SUGGESTION.encode(), suggestion.encode()
        )
    headers = {
        key: value.replace(CARD, card).replace(ADMIN, admin_token)
        for key, value in case.headers.items()
    }
    return HostileCase(case.kind, case.method, case.path, headers, body, case.note, case.chunked)


async def _prime(client: httpx.AsyncClient) -> tuple[str, str]:
    """A card (and its first suggestion) issued by the service, for the feedback cases."""
    request = next(e.request for e in examples() if e.name == PRIMER)
    try:
        response = await client.post(f"/cds-services/{request['hook']}", json=request)
        card = response.json()["cards"][0]
        return str(card["uuid"]), str(card["suggestions"][0]["uuid"])
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError):
        return "no-card-obtained", "no-suggestion-obtained"


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), 65_536):
        yield body[start : start + 65_536]


async def _send(client: httpx.AsyncClient, case: HostileCase) -> Result:
    headers = {k.encode("latin-1"): v.encode("latin-1") for k, v in case.headers.items()}
    resent = False
    while True:
        content: bytes | AsyncIterator[bytes] = _chunks(case.body) if case.chunked else case.body
        try:
            response = await client.request(
                case.method, case.path, headers=headers, content=content
            )
            break
        except (httpx.ReadError, httpx.RemoteProtocolError) as exc:
            # A kept-alive connection the server closed under us (as uvicorn does after a 500
            # on it) is no answer to this case: once more, on a new connection.
            if resent:
                return Result(case, None, f"no answer: {type(exc).__name__}: {exc}", resent=True)
            resent = True
        except httpx.HTTPError as exc:
            return Result(case, None, f"no answer: {type(exc).__name__}: {exc}", resent=resent)
    answer = response.content
    found = problem(case, response.status_code, response.headers.get("content-type", ""), answer)
    if found is None and len(case.body) > 4096:  # keep a failing body whole, to reproduce it
        case = dataclasses.replace(case, body=case.body[:4096])
    return Result(case, response.status_code, found, answer[:2000], resent)


async def run(
    url: str,
    hostile: Iterable[HostileCase],
    concurrency: int = 4,
    admin_token: str = "no-admin-token",
    timeout: float = 120.0,
) -> Report:
    """Send every case to the service at `url`, `concurrency` at a time; the answers, in order."""
    started = time.perf_counter()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        card, suggestion = await _prime(client)
        pending = iter(enumerate(hostile))
        results: dict[int, Result] = {}

        async def worker() -> None:
            for index, case in pending:
                ready = materialise(case, card, suggestion, admin_token)
                results[index] = await _send(client, ready)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    ordered = [results[index] for index in sorted(results)]
    return Report(ordered, time.perf_counter() - started)


def run_sync(
    url: str,
    hostile: Iterable[HostileCase],
    concurrency: int = 4,
    admin_token: str = "no-admin-token",
) -> Report:
    return asyncio.run(run(url, hostile, concurrency, admin_token))


# --- Reporting ------------------------------------------------------------------------------


def _status_order(label: str) -> tuple[int, str]:
    return (int(label), "") if label.isdigit() else (999, label)


def format_report(report: Report, url: str, seed: int) -> str:
    statuses = sorted(report.by_status, key=_status_order)
    lines = [
        f"hostile run: {len(report.results)} requests to {url} (seed {seed}) "
        f"in {report.seconds:.1f} s",
        "by status: " + ", ".join(f"{s}: {report.by_status[s]}" for s in statuses),
        "",
        "by kind:",
        f"  {'kind':<22}{'n':>6}" + "".join(f"{s:>10}" for s in statuses),
    ]
    for name, tally in sorted(report.by_kind.items()):
        cells = "".join(f"{tally[s] or '':>10}" for s in statuses)
        lines.append(f"  {name:<22}{sum(tally.values()):>6}{cells}")
    resent = sum(r.resent for r in report.results)
    if resent:
        lines += ["", f"{resent} requests resent: the server closed their kept-alive connection"]
    failures = report.failures
    if failures:
        lines += ["", f"FAILED: {len(failures)} answers"]
        kinds = Counter(r.case.kind for r in report.server_errors)
        if kinds:
            lines.append(
                "5xx or no answer from kinds: "
                + ", ".join(f"{k} ({v})" for k, v in sorted(kinds.items()))
            )
        for result in failures[:40]:
            case = result.case
            lines.append(
                f"  [{case.kind}] {case.method} {case.path[:80]} ({case.note[:100]}): "
                f"{result.problem}; body {case.body[:160]!r}; answer {result.answer[:200]!r}"
            )
    else:
        lines += ["", "no 5xx, every error an OperationOutcome"]
    return "\n".join(lines)


def _save(failures: list[Result], folder: Path) -> None:
    """Each failing request as `<n>-<kind>.body` and `<n>-<kind>.json` (method, path, headers)."""
    folder.mkdir(parents=True, exist_ok=True)
    for number, result in enumerate(failures):
        case, stem = result.case, f"{number:04d}-{result.case.kind}"
        (folder / f"{stem}.body").write_bytes(case.body)
        meta = {
            "kind": case.kind,
            "method": case.method,
            "path": case.path,
            "headers": case.headers,
            "chunked": case.chunked,
            "note": case.note,
            "status": result.status,
            "problem": result.problem,
            "answer": result.answer.decode("utf-8", "replace"),
        }
        (folder / f"{stem}.json").write_text(json.dumps(meta, indent=2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--url", required=True, help="the running service, e.g. http://127.0.0.1:8765"
    )
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--admin-token", default="no-admin-token", help="the service's CDS_ADMIN_TOKEN"
    )
    parser.add_argument("--save", type=Path, help="write each failing request into this folder")
    args = parser.parse_args(argv)
    report = run_sync(
        args.url.rstrip("/"), cases(args.seed, args.count), args.concurrency, args.admin_token
    )
    print(format_report(report, args.url, args.seed))
    if args.save and report.failures:
        _save(report.failures, args.save)
        print(f"failing requests written to {args.save}")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
