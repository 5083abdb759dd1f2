"""How one evaluation scales with the record: the realistic request with many more Observations.

Two kinds of record, reported apart:

- relevant: body temperatures inside the fever rule's lookback (30 days), a reading every few
  minutes, 36.0 to 39.5 Cel: every one is read by a rule (an inpatient's vitals feed);
- irrelevant: labs no rule reads (heart rate, blood pressure, ...), passed over before validation.

Measures, in process and on one core, what one call costs a worker: orjson parse, request model,
`Triage.run` and the response's JSON; median of `--runs`, with the app's collector settings and
its pause for a large body (`collector.py`), as the service reads one. Also prints the facts the
engine was given, and each size's time over the smallest size's of its kind, by median and by
minimum (the minimum is the steadier on a shared machine), beside the size ratio (linear: that
ratio or less).

    .venv/bin/python -m bench.scaling [--sizes 2300 23000] [--runs 5]
"""

import argparse
import os
import random
import statistics
import time
from datetime import datetime, timedelta
from typing import Any

import orjson

from bench.bench import OTHER_OBSERVATIONS, TODAY, realistic_request
from cds_service import collector
from cds_service.facts import build_facts
from cds_service.hooks import HOOKS
from cds_service.knowledge import load_knowledge
from cds_service.models import HookRequest, dump
from cds_service.prefetch import read_context, read_record
from cds_service.triage import Triage

LOOKBACK_MINUTES = 29 * 24 * 60


def reading(i: int, relevant: bool, rng: random.Random) -> dict[str, Any]:
    """The `i`-th Observation of a record: a temperature in the lookback, or an unread lab."""
    if relevant:
        code, display, unit, low, high = "8310-5", "Body temperature", "Cel", 36.0, 39.5
        minutes = rng.randint(0, LOOKBACK_MINUTES)
    else:
        code, display, unit, low, high = rng.choice(OTHER_OBSERVATIONS)
        minutes = rng.randint(0, 730 * 24 * 60)
    when = datetime(TODAY.year, TODAY.month, TODAY.day) - timedelta(minutes=minutes)
    return {
        "resourceType": "Observation",
        "id": f"o{i}",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}]},
        "subject": {"reference": "Patient/bench-patient"},
        "effectiveDateTime": f"{when.isoformat()}Z",
        "valueQuantity": {"value": round(rng.uniform(low, high), 1), "unit": unit},
    }


def with_observations(count: int, relevant: bool) -> dict[str, Any]:
    """The realistic request with `count` Observations of one kind instead of its 500."""
    rng = random.Random(count)
    request = realistic_request()
    entries = [{"resource": reading(i, relevant, rng)} for i in range(count)]
    request["prefetch"]["observations"]["entry"] = entries
    return request


def engine_facts(triage: Triage, body: bytes) -> int:
    """How many facts the engine is given for `body`."""
    request = HookRequest.model_validate(orjson.loads(body))
    context = read_context(request, HOOKS["patient-view"].context)
    record = read_record(request, context, triage.queries, triage.reader(TODAY))
    return len(triage.summaries.summarise(build_facts(record, triage.knowledge, TODAY)).facts)


def measure(triage: Triage, body: bytes, runs: int) -> list[float]:
    hook = HOOKS["patient-view"]
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        with collector.paused_for(len(body)):  # as the route reads a body (`collector.py`)
            request = HookRequest.model_validate(orjson.loads(body))
            context = hook.context.model_validate(request.context)
            orjson.dumps(dump(triage.run(request, context, hook, TODAY).response))
        times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="*", default=[2300, 23_000])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    triage = Triage(load_knowledge())
    collector.configure()
    print(f"load average {os.getloadavg()[0]:.2f}; times in ms, one core\n")
    print(
        f"{'kind':10} {'Observations':>12} {'body MB':>8} {'median':>8} {'min':>8} {'max':>8}"
        f" {'x smallest (median, min) / size':>32} {'engine facts':>12}"
    )
    for relevant in (True, False):
        smallest = None
        for count in sorted(args.sizes):
            body = orjson.dumps(with_observations(count, relevant))
            times = measure(triage, body, args.runs)
            median = statistics.median(times)
            smallest = smallest or (count, median, min(times))
            ratio = (
                f"{median / smallest[1]:.1f}x, {min(times) / smallest[2]:.1f}x / "
                f"{count / smallest[0]:.0f}x"
            )
            print(
                f"{'relevant' if relevant else 'irrelevant':10} {count:>12} "
                f"{len(body) / 1e6:8.2f} {median:8.1f} {min(times):8.1f} {max(times):8.1f} "
                f"{ratio:>32} {engine_facts(triage, body):>12}"
            )


if __name__ == "__main__":
    main()
