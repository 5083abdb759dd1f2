"""How the triage scales with the record: the realistic request with its Observations multiplied.

Every 50th Observation is a body temperature (a rule reads it), the rest are labs no rule reads,
each with its own id. Measures, in process and on one core, orjson parse + request model +
`Triage.run` (what one call costs a worker), median of `--runs`, after `gc.freeze()` and with the
app's collector threshold, as `create_app` sets them.

    .venv/bin/python bench/scaling.py [--sizes 2000 20000] [--runs 7]
"""

import argparse
import copy
import gc
import os
import statistics
import time
from typing import Any

import orjson

from bench.bench import TODAY, realistic_request
from cds_service.hooks import HOOKS
from cds_service.knowledge import load_knowledge
from cds_service.models import HookRequest
from cds_service.triage import Triage

BODY_LIMIT = 5_000_000


def with_observations(count: int) -> dict[str, Any]:
    """The realistic request with `count` Observations (its 500, repeated with new ids)."""
    request = realistic_request()
    template = request["prefetch"]["observations"]["entry"]
    entries = []
    for i in range(count):
        entry = copy.deepcopy(template[i % len(template)])
        entry["resource"]["id"] = f"o{i}"
        entries.append(entry)
    request["prefetch"]["observations"]["entry"] = entries
    return request


def largest_under_limit() -> int:
    """The most Observations a request under the body limit can carry (bisection)."""
    low, high = 500, 40_000
    while high - low > 50:
        middle = (low + high) // 2
        size = len(orjson.dumps(with_observations(middle)))
        low, high = (middle, high) if size <= BODY_LIMIT else (low, middle)
    return low


def measure(triage: Triage, body: bytes, runs: int) -> list[float]:
    hook = HOOKS["patient-view"]
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        request = HookRequest.model_validate(orjson.loads(body))
        context = hook.context.model_validate(request.context)
        triage.run(request, context, hook, TODAY)
        times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="*", default=[500, 2000, 10_000, 20_000])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    triage = Triage(load_knowledge())
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    largest = largest_under_limit()
    print(f"{'Observations':>12} {'body MB':>8} {'median ms':>10} {'min':>7} {'max':>7}")
    for count in sorted({*args.sizes, largest}):
        body = orjson.dumps(with_observations(count))
        times = measure(triage, body, args.runs)
        note = "  (largest under the body limit)" if count == largest else ""
        print(
            f"{count:>12} {len(body) / 1e6:8.2f} {statistics.median(times):10.1f} "
            f"{min(times):7.1f} {max(times):7.1f}{note}"
        )


if __name__ == "__main__":
    main()
