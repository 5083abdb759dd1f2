"""CPU instructions per evaluation, counted by valgrind's callgrind: the figure that does not
move with the machine's load (wall and CPU times here vary by 1.5x to 2x from run to run).

Each scenario runs in its own process under `valgrind --tool=callgrind --instr-atstart=no`;
instrumentation is switched on (`callgrind_control -i on`) after start-up and warm-up, around
the measured evaluations only, so the count is per evaluation:

- floor: `bench.floor.app` called in process (ASGI, no HTTP): the body parsed, a fixed card, in a
  process that imports nothing of spine-cds (as `uvicorn bench.floor:app`: its objects would
  slow the collector);
- realistic: the spine-cds app called in process the same way (middleware, routing, triage, the
  audit write in a fresh SQLite file, the response's JSON): 1 Patient, 50 Conditions,
  500 Observations (`bench.bench.realistic_request`);
- relevant N: parse, request model, `Triage.run` and the response's JSON for the record of
  `bench.scaling.with_observations(N, relevant=True)` (N temperatures the rules read).

With `--phases`, the realistic call is also counted stopped before each of its phases (the
function that starts it raises, and the service answers no card), so the difference between
two stops is what a phase costs: where a request's instructions go.

Instructions are not time (a cache miss costs many), but they compare code with code exactly:
the same count twice for the same code and inputs, whatever else the machine runs.

    .venv/bin/python -m bench.instructions [--requests 20] [--sizes 2300 23000] [--phases]

Needs valgrind (Debian package `valgrind`); about 15 s per scenario and 40 s for 23,000.
"""

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

PATH = "/cds-services/patient-view"
WARM_UP = 5
REQUEST = "BENCH_REQUEST"
"""The environment variable naming the file of the realistic request's JSON."""


def _switch(on: bool) -> None:
    """Instrumentation on or off for this process (a no-op outside valgrind)."""
    command = ["callgrind_control", "-i", "on" if on else "off", str(os.getpid())]
    subprocess.run(command, check=False, capture_output=True)


def _asgi_call(app: Any, body: bytes) -> Callable[[], None]:
    """One POST of `body` to `app`, called in process; asserts a 200."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": PATH,
        "raw_path": PATH.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }

    async def call() -> None:
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        status: list[int] = []

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            await asyncio.Event().wait()  # no disconnect while the call runs
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app({**scope, "state": {}}, receive, send)
        assert status == [200], status

    loop = asyncio.new_event_loop()
    return lambda: loop.run_until_complete(call())


PHASES = [
    ("the body, its parse and request model, routing, middleware", "record"),
    ("the Patient and Conditions read (scan, validation)", "observation scan"),
    ("the Observations' relevance scan", "observation validation"),
    ("the kept Observations validated", "observation entries"),
    ("the kept Observations' entries listed", "facts"),
    ("facts and summaries", "engine"),
    ("durable-rules session, arbitration", "cards"),
    ("cards and the response model", "response"),
    ("the response's JSON, metrics", "audit"),
    ("the audit write, the answer", None),
]
"""The realistic call's phases in order, each with the stop that ends it (None: the end)."""


class _Stopped(Exception):
    """Raised where a `--phases` count stops the call."""


def _stop_before(phase: str) -> None:
    """Make the realistic call stop where `phase` starts (the service answers no card)."""
    from cds_service import cards, engine, prefetch, service, storage, triage

    Hit = Callable[[tuple[Any, ...]], bool] | None  # which calls stop (None: the first)
    stops: dict[str, tuple[Any, str, Hit]] = {
        "record": (triage, "read_record", None),
        "observation scan": (prefetch, "_readable", lambda a: a[2] == "Observation"),
        "observation validation": (prefetch, "_parse", lambda a: a[1] == "prefetch.observations"),
        "observation entries": (prefetch, "_collect", lambda a: a[2] == "prefetch.observations"),
        "facts": (triage, "build_facts", None),
        "engine": (engine.Engine, "evaluate", None),
        "cards": (cards.CardBuilder, "build", None),
        "response": (service, "dump", None),
        "audit": (storage.Store, "record_evaluation", None),
    }
    owner, name, hit = stops[phase]
    function = getattr(owner, name)

    def stopping(*args: Any) -> Any:
        if hit is None or hit(args):
            raise _Stopped
        return function(*args)

    setattr(owner, name, stopping)
    evaluate = service.CDSService.evaluate

    async def stopped(self: Any, *args: Any) -> dict[str, Any]:
        try:
            return await evaluate(self, *args)
        except _Stopped:
            return {"cards": []}

    service.CDSService.evaluate = stopped  # type: ignore[method-assign,assignment]


def _scenario(name: str, workdir: str) -> Callable[[], None]:
    if name == "floor":  # nothing of spine-cds imported: its objects would slow the collector
        from bench.floor import app

        return _asgi_call(app, Path(os.environ[REQUEST]).read_bytes())
    from bench.bench import TODAY

    if name.startswith("realistic"):
        if name.startswith("realistic until "):
            _stop_before(name.removeprefix("realistic until "))
        os.environ.update(
            CDS_AUTH_DISABLED="true",
            CDS_TODAY=TODAY.isoformat(),
            CDS_LOG_LEVEL="error",
            CDS_DATABASE_URL=f"sqlite:///{workdir}/audit.db",
        )
        from cds_service.app import create_app

        return _asgi_call(create_app(), Path(os.environ[REQUEST]).read_bytes())
    from bench.scaling import with_observations
    from cds_service import collector
    from cds_service.hooks import HOOKS
    from cds_service.knowledge import load_knowledge
    from cds_service.models import HookRequest, dump
    from cds_service.triage import Triage

    triage, hook = Triage(load_knowledge()), HOOKS["patient-view"]
    body = orjson.dumps(with_observations(int(name.split()[-1]), relevant=True))
    collector.configure()

    def evaluate() -> None:
        with collector.paused_for(len(body)):  # as the route reads a body
            request = HookRequest.model_validate(orjson.loads(body))
            context = hook.context.model_validate(request.context)
            orjson.dumps(dump(triage.run(request, context, hook, TODAY).response))

    return evaluate


def _inner(name: str, count: int) -> None:
    """Run under valgrind: warm up, then count `count` evaluations."""
    with tempfile.TemporaryDirectory() as workdir:
        evaluate = _scenario(name, workdir)
        for _ in range(min(WARM_UP, count)):
            evaluate()
        _switch(True)
        for _ in range(count):
            evaluate()
        _switch(False)


def count(name: str, evaluations: int) -> int:
    """Instructions per evaluation of scenario `name`."""
    with tempfile.TemporaryDirectory() as workdir:
        out = Path(workdir) / "callgrind.out"
        command = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-m",
            "bench.instructions",
            "--inner",
            name,
            str(evaluations),
        ]
        from bench.bench import realistic_request

        request = Path(workdir) / "request.json"
        request.write_bytes(orjson.dumps(realistic_request()))
        env = {**os.environ, "PYTHONHASHSEED": "0", REQUEST: str(request)}
        subprocess.run(command, check=True, capture_output=True, env=env)
        totals = re.search(r"^totals: (\d+)", out.read_text(), re.MULTILINE)
        if totals is None:
            raise RuntimeError(f"no totals in {out}")
        return int(totals.group(1)) // evaluations


def _print_phases(realistic: int, requests: int) -> None:
    """The realistic call's instructions by phase, each the difference between two stops."""
    before = 0
    for phase, stop in PHASES:
        upto = count(f"realistic until {stop}", requests) if stop else realistic
        print(f"  {phase:58} {upto - before:>12,}   {(upto - before) / realistic:6.1%}")
        before = upto


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--sizes", type=int, nargs="*", default=[2300, 23_000])
    parser.add_argument("--phases", action="store_true", help="also count each phase")
    parser.add_argument("--inner", nargs=2, metavar=("SCENARIO", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        _inner(args.inner[0], int(args.inner[1]))
        return
    print(f"{'scenario':22} {'instructions per evaluation':>28}")
    floor = count("floor", args.requests)
    print(f"{'floor (ASGI)':22} {floor:>28,}")
    realistic = count("realistic", args.requests)
    print(f"{'realistic (ASGI)':22} {realistic:>28,}   {realistic / floor:.1f}x the floor")
    if args.phases:
        _print_phases(realistic, args.requests)
    smallest = None
    for size in sorted(args.sizes):
        counted = count(f"relevant {size}", 1)
        smallest = smallest or (size, counted)
        ratio = f"{counted / smallest[1]:.1f}x for {size / smallest[0]:.0f}x the readings"
        print(f"{f'relevant {size}':22} {counted:>28,}   {ratio}")


if __name__ == "__main__":
    main()
