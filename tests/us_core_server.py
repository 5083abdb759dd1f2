"""A strict FHIR server on loopback: it answers only the searches a US Core server SHALL support.

A stand-in for an EHR (no real EHR runs here): it holds one record in memory and answers the
search parameter combinations that the US Core 9.0 server CapabilityStatement
(HL7/US-Core@85bf4af, `CapabilityStatement-us-core-server.json`) marks SHALL, plus `_count`,
paging and, when `include` is on, `_include=MedicationRequest:medication` (a SHOULD). Anything
else, e.g. `Observation?patient=x` alone (Epic refuses it too), gets a 400 OperationOutcome.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

from tests.fhir_server import FhirServer, fhir_server

SHALL: dict[str, list[frozenset[str]]] = {
    "Condition": [frozenset({"patient"}), frozenset({"patient", "category"})],
    "Observation": [
        frozenset({"patient", "category"}),
        frozenset({"patient", "category", "date"}),
        frozenset({"patient", "code"}),
    ],
    "MedicationRequest": [
        frozenset({"patient", "intent"}),
        frozenset({"patient", "intent", "status"}),
    ],
    "Procedure": [frozenset({"patient"}), frozenset({"patient", "date"})],
    "ServiceRequest": [
        frozenset({"patient"}),
        frozenset({"patient", "category"}),
        frozenset({"patient", "code"}),
    ],
}
"""Per resource type, the parameter combinations a US Core server SHALL answer."""
_MULTIPLE_OR = {"intent"}
"""Parameters whose comma-separated values a US Core server SHALL read as OR."""
_RESULT = {"_count", "_include", "_page"}


@dataclass
class Record:
    """What the strict server holds and serves."""

    resources: list[dict[str, Any]] = field(default_factory=list)
    include: bool = True
    """Answer `_include=MedicationRequest:medication` (else ignore it, as many servers do)."""
    searches: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


@contextmanager
def us_core_server(record: Record) -> Iterator[FhirServer]:
    with fhir_server() as server:
        server.answer = lambda path: _answer(record, server.base, path)
        yield server


def _outcome(status: int, text: str) -> tuple[int, Any]:
    issue = {"severity": "error", "code": "not-supported", "diagnostics": text}
    return status, {"resourceType": "OperationOutcome", "issue": [issue]}


def _answer(record: Record, base: str, path: str) -> tuple[int, Any]:
    kind, _, query = path.partition("?")
    if not query:
        return _read(record, kind)
    record.searches.append(path)
    params = dict(parse_qsl(query, keep_blank_values=True))
    names = frozenset(params) - _RESULT
    if names not in SHALL.get(kind, []):
        record.refused.append(path)
        return _outcome(400, f"search {kind} by {'+'.join(sorted(names))} is not supported")
    if any("," in params[name] for name in names - _MULTIPLE_OR):
        record.refused.append(path)
        return _outcome(400, "multiple values are supported only for intent")
    found = [r for r in record.resources if r.get("resourceType") == kind]
    found = [r for r in found if all(_matches(r, n, params[n]) for n in names)]
    return 200, _page(record, base, kind, params, found)


def _read(record: Record, path: str) -> tuple[int, Any]:
    kind, _, id_ = path.partition("/")
    for resource in record.resources:
        if resource.get("resourceType") == kind and resource.get("id") == id_:
            return 200, resource
    return _outcome(404, f"no {path}")


def _page(
    record: Record, base: str, kind: str, params: dict[str, str], found: list[dict[str, Any]]
) -> dict[str, Any]:
    count, page = int(params.get("_count", "50")), int(params.get("_page", "0"))
    shown = found[page * count : (page + 1) * count]
    entries: list[dict[str, Any]] = [
        {"resource": r, "search": {"mode": "match"}, "fullUrl": f"{base}/{kind}/{r.get('id')}"}
        for r in shown
    ]
    if record.include and params.get("_include") == "MedicationRequest:medication":
        entries += _included(record, shown)
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "entry": entries}
    if (page + 1) * count < len(found):
        following = urlencode({**params, "_page": str(page + 1)}, safe=":,|")
        bundle["link"] = [{"relation": "next", "url": f"{base}/{kind}?{following}"}]
    return bundle


def _included(record: Record, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    wanted = {
        str(r.get("medicationReference", {}).get("reference", "")).removeprefix("Medication/")
        for r in requests
    }
    return [
        {"resource": m, "search": {"mode": "include"}}
        for m in record.resources
        if m.get("resourceType") == "Medication" and m.get("id") in wanted
    ]


def _matches(resource: dict[str, Any], name: str, value: str) -> bool:
    if name == "patient":
        return str(resource.get("subject", {}).get("reference", "")).endswith(f"Patient/{value}")
    if name in ("category", "code"):
        concepts = resource.get(name, [])
        concepts = concepts if isinstance(concepts, list) else [concepts]
        return any(_token(coding, value) for c in concepts for coding in c.get("coding", []))
    if name in ("intent", "status"):
        return resource.get(name) in value.split(",")
    if name == "date":
        return _on_or_after(resource, value)
    raise AssertionError(f"no filter for {name}")


def _token(coding: dict[str, Any], value: str) -> bool:
    system, bar, code = value.rpartition("|")
    return coding.get("code") == code and (not bar or coding.get("system") == system)


def _on_or_after(resource: dict[str, Any], value: str) -> bool:
    """`date=geYYYY-MM-DD` on an Observation's effective[x] (or a Procedure's performed[x])."""
    assert value.startswith("ge"), value
    period = resource.get("effectivePeriod") or resource.get("performedPeriod") or {}
    when = (
        resource.get("effectiveDateTime")
        or resource.get("effectiveInstant")
        or resource.get("performedDateTime")
        or period.get("end")
        or period.get("start")
        or resource.get("issued")
    )
    return when is not None and str(when)[:10] >= value[2:]
