"""The `cds-service` command: serve, evaluate offline, check the rules, tend the store, report."""

import argparse
import json
import os
import sys
from datetime import date
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import ValidationError

from cds_service import demo, examples
from cds_service.analytics import clinician_report, render, render_clinician, report, rule_book
from cds_service.errors import CDSError, validation_issues
from cds_service.hooks import HOOKS
from cds_service.knowledge import KnowledgeError, load_knowledge
from cds_service.logs import configure_logging
from cds_service.models import HookRequest, dump
from cds_service.red_flag_routes import build_matrix, matrix_markdown
from cds_service.rules_table import rules_table
from cds_service.settings import Settings, UnsafeSettings
from cds_service.storage import Store, StoreNotReady
from cds_service.triage import Triage, today_utc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cds-service", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP service (settings: CDS_* variables)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)

    evaluate = commands.add_parser("evaluate", help="evaluate one CDS Hooks request offline")
    evaluate.add_argument("request", help="request JSON file, or - for stdin")

    rules = commands.add_parser("rules", help="knowledge base tools")
    rules.add_argument(
        "action",
        choices=["check", "table", "matrix"],
        help="check: validate rule files and value sets; table: print the rules as markdown; "
        "matrix: print the red-flag route matrix as markdown",
    )

    example = commands.add_parser(
        "example",
        help="print an example request, its dates moved to today (CDS_TODAY), ready to send",
    )
    example.add_argument("name", nargs="?", help="the example's name; none: list the names")

    commands.add_parser("openapi", help="print the service's OpenAPI document (JSON)")

    reporting = commands.add_parser(
        "report", help="the CDS committee's report from the store (settings: CDS_* variables)"
    )
    reporting.add_argument("--since", type=date.fromisoformat, help="first day included (UTC)")
    reporting.add_argument("--until", type=date.fromisoformat, help="first day not included (UTC)")
    reporting.add_argument("--format", choices=["table", "json", "csv"], default="table")
    reporting.add_argument(
        "--clinician",
        metavar="PSEUDONYM",
        help="only this clinician's feedback, beside every clinician's together (to hand out)",
    )

    pseudonym = commands.add_parser(
        "pseudonym", help="a clinician's pseudonym under CDS_PSEUDONYM_KEY (for --clinician)"
    )
    pseudonym.add_argument("user_id", help="the clinician's context.userId, e.g. Practitioner/1")

    demo_traffic = commands.add_parser(
        "demo-traffic",
        help="replay the example requests, with feedback, against a running try-it service",
    )
    demo_traffic.add_argument("--url", default="http://127.0.0.1:8000")
    demo_traffic.add_argument("--rounds", type=int, default=3)
    demo_traffic.add_argument("--seed", type=int, default=0)

    store = commands.add_parser("store", help="database tools (settings: CDS_* variables)")
    store.add_argument(
        "action",
        choices=["migrate", "purge"],
        help="migrate: create or upgrade the schema; purge: delete what is past retention",
    )

    args = parser.parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            name = f"CDS_{str(err['loc'][0]).upper()}"
            print(f"cds-service: invalid setting {name}: {err['msg']}", file=sys.stderr)
        return 2
    if args.command != "serve":  # stdout carries the command's result: logs go to stderr
        configure_logging("warning", sys.stderr)
    try:
        if args.command == "serve":
            return _serve(settings, args.host, args.port, args.workers)
        if args.command == "evaluate":
            return _evaluate(settings, args.request)
        if args.command == "example":
            return _example(settings, args.name)
        if args.command == "openapi":
            return _openapi(settings)
        if args.command == "store":
            return _store(settings, args.action)
        if args.command == "report":
            return _report(settings, args.since, args.until, args.format, args.clinician)
        if args.command == "pseudonym":
            return _pseudonym(settings, args.user_id)
        if args.command == "demo-traffic":
            return _demo(settings, args.url, args.rounds, args.seed)
        if args.action == "table":
            print(rules_table(load_knowledge(settings.rules_dir)), end="")
            return 0
        if args.action == "matrix":
            knowledge = load_knowledge(settings.rules_dir)
            print(matrix_markdown(knowledge, build_matrix(knowledge, settings.rules_dir)), end="")
            return 0
        return _check(settings)
    except KnowledgeError as exc:
        print(f"cds-service: invalid knowledge base: {exc}", file=sys.stderr)
        return 2
    except StoreNotReady as exc:
        print(f"cds-service: {exc}", file=sys.stderr)
        return 2


def _serve(settings: Settings, host: str, port: int, workers: int) -> int:
    import uvicorn

    from cds_service.protocol import HeaderTimeoutProtocol

    try:
        settings.check_serving()
    except UnsafeSettings as exc:
        print(f"cds-service: {exc}", file=sys.stderr)
        return 2
    load_knowledge(settings.rules_dir)  # fail fast, before uvicorn starts its workers
    configure_logging(settings.log_level)
    store = Store(settings.database_url, migrate=False)
    if settings.migrates_on_start:  # once, here, not once per worker at the same time
        store.migrate()
        os.environ["CDS_MIGRATE_ON_START"] = "false"  # the workers read their settings anew
    store.check_schema()  # one line and exit 2 when the store is missing or behind
    uvicorn.run(
        "cds_service.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=None,  # keep the JSON logging configured here
        access_log=False,  # RequestLog writes the access lines, with request ids
        http=HeaderTimeoutProtocol,  # httptools, closing connections whose headers are late
    )
    return 0


def _read(source: str) -> Any:
    text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    return json.loads(text)


def _evaluate(settings: Settings, source: str) -> int:
    try:
        request = HookRequest.model_validate(_read(source))
        triage = Triage(load_knowledge(settings.rules_dir, HOOKS), HOOKS, settings.rule_modes)
        response = triage.evaluate(request, request.hook, settings.today or today_utc())
    except (OSError, json.JSONDecodeError) as exc:
        print(f"cds-service: cannot read {source}: {exc}", file=sys.stderr)
        return 1
    except ValidationError as exc:
        for issue in validation_issues(exc.errors(include_url=False)):
            print(f"cds-service: {issue.expression}: {issue.message}", file=sys.stderr)
        return 1
    except CDSError as exc:
        print(f"cds-service: HTTP {exc.status} equivalent: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(dump(response), indent=2))
    return 0


def _example(settings: Settings, name: str | None) -> int:
    found = examples.names(settings.examples_dir)
    if name is None:
        print("\n".join(found))
        return 0
    if name not in found:
        print(f"cds-service: no example {name!r} in {settings.examples_dir}", file=sys.stderr)
        return 1
    print(json.dumps(examples.load(found[name], settings.today or today_utc()), indent=2))
    return 0


def _check(settings: Settings) -> int:
    knowledge = load_knowledge(settings.rules_dir, HOOKS)
    Triage(knowledge, HOOKS, settings.rule_modes)  # compiles every hook's ruleset
    build_matrix(knowledge, settings.rules_dir)  # checks rules/routes.yaml
    codes = sum(len(vs.codes) for vs in knowledge.value_sets.values())
    print(
        f"rule set {knowledge.manifest.name} {knowledge.version}: {len(knowledge.rules)} rules, "
        f"{len(knowledge.value_sets)} value sets ok ({codes} codes)"
    )
    return 0


def _store(settings: Settings, action: str) -> int:
    store = Store(settings.database_url, migrate=False)
    if action == "migrate":
        before, after = store.migrate()
        done = "already at" if before == after else f"migrated from {before or 'empty'} to"
        print(f"store at {store.location}: {done} schema {after}")
        return 0
    store.check_schema()
    deleted = store.purge(settings.audit_retention_days, settings.feedback_retention_days)
    print(json.dumps(deleted))
    return 0


def _report(
    settings: Settings,
    since: date | None,
    until: date | None,
    fmt: Literal["table", "json", "csv"],
    clinician: str | None,
) -> int:
    store = Store(settings.database_url, migrate=False)
    store.check_schema()
    rules = rule_book(load_knowledge(settings.rules_dir, HOOKS), settings.rule_modes)
    min_cell = settings.clinician_min_cell
    if clinician is not None:
        one = clinician_report(store.engine, since, until, clinician, rules, min_cell)
        print(render_clinician(one, fmt), end="")
        return 0
    linked = settings.pseudonyms() is not None
    window = settings.safety_window_days
    whole = report(
        store.engine, since, until, rules, linked=linked, window_days=window, min_cell=min_cell
    )
    print(render(whole, fmt), end="")
    return 0


def _pseudonym(settings: Settings, user_id: str) -> int:
    pseudonyms = settings.pseudonyms()
    if pseudonyms is None:
        print("cds-service: no CDS_PSEUDONYM_KEY configured: nothing is linked", file=sys.stderr)
        return 2
    print(pseudonyms.clinician(user_id))
    return 0


def _demo(settings: Settings, url: str, rounds: int, seed: int) -> int:
    try:
        today = settings.today or today_utc()
        summary = demo.run(url, settings.examples_dir, today, rounds, seed)
    except httpx.TransportError as exc:
        print(f"cds-service: cannot reach {url}: {exc}", file=sys.stderr)
        return 1
    print(demo.format_summary(summary))
    return 1 if summary.errors else 0


def _openapi(settings: Settings) -> int:
    from cds_service.app import create_app

    in_memory = settings.model_copy(  # no file for this
        update={"database_url": "sqlite://", "migrate_on_start": True}
    )
    print(json.dumps(create_app(in_memory).openapi(), indent=2))
    return 0
