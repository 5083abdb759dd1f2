"""In-process latency and memory benchmark of the triage (figures in docs/performance.md).

Measures the whole path from request bytes to response bytes (parse, prefetch, facts, engine,
cards, JSON) for a small request (a fhir_examples case) and a realistic one (1 Patient,
50 Conditions, 500 Observations), beside the floor: json.loads + json.dumps of the same body.
Then RSS over 50,000 evaluations. Pinned to one core.

    .venv/bin/python bench/bench.py [--iterations 2000] [--memory-evaluations 50000]
"""

import argparse
import gc
import json
import os
import random
import statistics
import time
from collections.abc import Callable
from datetime import date, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from cds_service.knowledge import load_knowledge
from cds_service.models import HookRequest, dump
from cds_service.triage import Triage

ROOT = Path(__file__).resolve().parent.parent
TODAY = date(2026, 11, 1)
SMALL = ROOT / "fhir_examples" / "red-flag-spinal-infection--fever-ivdu-markers.json"

# Unrelated codes that fill a real problem list and vitals feed (not in any value set).
OTHER_CONDITIONS = [
    ("http://snomed.info/sct", "38341003", "Hypertensive disorder"),
    ("http://snomed.info/sct", "44054006", "Diabetes mellitus type 2"),
    ("http://snomed.info/sct", "55822004", "Hyperlipidemia"),
    ("http://snomed.info/sct", "195662009", "Acute viral pharyngitis"),
    ("http://hl7.org/fhir/sid/icd-10-cm", "J45.909", "Unspecified asthma, uncomplicated"),
]
OTHER_OBSERVATIONS = [
    ("8867-4", "Heart rate", "/min", 60, 100),
    ("8480-6", "Systolic blood pressure", "mm[Hg]", 100, 150),
    ("29463-7", "Body weight", "kg", 60, 100),
    ("9279-1", "Respiratory rate", "/min", 12, 20),
    ("72514-3", "Pain severity - 0-10 verbal numeric rating [Score] - Reported", "{score}", 0, 10),
]


def realistic_request() -> dict[str, Any]:
    """1 Patient, 50 Conditions (3 back-pain related), 500 Observations over two years."""
    rng = random.Random(6)
    pid = "bench-patient"

    def condition(i: int, system: str, code: str, display: str, days: int) -> dict[str, Any]:
        return {
            "resourceType": "Condition",
            "id": f"c{i}",
            "clinicalStatus": {"coding": [{"code": rng.choice(["active", "resolved"])}]},
            "code": {"coding": [{"system": system, "code": code, "display": display}]},
            "subject": {"reference": f"Patient/{pid}"},
            "onsetDateTime": (TODAY - timedelta(days=days)).isoformat(),
        }

    conditions = [
        condition(0, "http://snomed.info/sct", "279039007", "Low back pain", 20),
        condition(1, "http://hl7.org/fhir/sid/icd-10-cm", "M54.16", "Radiculopathy, lumbar", 60),
        condition(2, "http://snomed.info/sct", "386661006", "Fever", 2),
    ]
    for i in range(3, 50):
        system, code, display = rng.choice(OTHER_CONDITIONS)
        conditions.append(condition(i, system, code, display, rng.randint(10, 3000)))
    observations = []
    for i in range(500):
        if i % 50 == 0:
            code, display, unit, low, high = "8310-5", "Body temperature", "Cel", 36.0, 39.5
        else:
            code, display, unit, low, high = rng.choice(OTHER_OBSERVATIONS)
        observations.append(
            {
                "resourceType": "Observation",
                "id": f"o{i}",
                "status": "final",
                "code": {
                    "coding": [{"system": "http://loinc.org", "code": code, "display": display}]
                },
                "subject": {"reference": f"Patient/{pid}"},
                "effectiveDateTime": f"{TODAY - timedelta(days=rng.randint(0, 730))}T08:00:00Z",
                "valueQuantity": {"value": round(rng.uniform(low, high), 1), "unit": unit},
            }
        )

    def bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [{"resource": r} for r in resources],
        }

    return {
        "hook": "patient-view",
        "hookInstance": "bench",
        "context": {"patientId": pid, "userId": "Practitioner/bench"},
        "prefetch": {
            "patient": {"resourceType": "Patient", "id": pid, "birthDate": "1970-01-01"},
            "conditions": bundle(conditions),
            "observations": bundle(observations),
        },
    }


def measure(fn: Callable[[], Any], iterations: int) -> list[float]:
    for _ in range(min(200, iterations)):
        fn()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times


def percentile(times: list[float], q: float) -> float:
    return statistics.quantiles(times, n=100, method="inclusive")[int(q) - 1]


def round_trip(body: bytes) -> str:
    """The floor: what any JSON service pays for the same body."""
    return json.dumps(json.loads(body))


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--memory-evaluations", type=int, default=50_000)
    args = parser.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    triage = Triage(load_knowledge())
    gc.freeze()  # as create_app does once the service is built

    def evaluate(body: bytes) -> str:
        request = HookRequest.model_validate(json.loads(body))
        return json.dumps(dump(triage.evaluate(request, request.hook, TODAY)))

    cases = {
        "small (example, 2 Conditions, 3 Observations)": SMALL.read_bytes(),
        "realistic (1 Patient, 50 Conditions, 500 Observations)": json.dumps(
            realistic_request()
        ).encode(),
    }
    print(f"one core, {args.iterations} iterations each, times in ms\n")
    print(f"{'request':56} {'p50':>7} {'p99':>7} {'floor p50':>10} {'ratio':>6} cards")
    for name, body in cases.items():
        cards = len(json.loads(evaluate(body))["cards"])
        times = measure(partial(evaluate, body), args.iterations)
        floor = measure(partial(round_trip, body), args.iterations)
        p50, p99, f50 = percentile(times, 50), percentile(times, 99), percentile(floor, 50)
        print(f"{name:56} {p50:7.2f} {p99:7.2f} {f50:10.3f} {p50 / f50:5.1f}x {cards}")

    if args.memory_evaluations <= 0:
        return
    body = cases["realistic (1 Patient, 50 Conditions, 500 Observations)"]
    print(f"\nRSS over {args.memory_evaluations} realistic evaluations (MiB):")
    checkpoints = {args.memory_evaluations * k // 5 for k in range(1, 6)}
    start = time.perf_counter()
    for i in range(1, args.memory_evaluations + 1):
        evaluate(body)
        if i in checkpoints or i == 1000:
            print(f"  after {i:>6}: {rss_mib():6.1f}")
    print(f"  ({(time.perf_counter() - start):.0f} s)")


if __name__ == "__main__":
    main()
