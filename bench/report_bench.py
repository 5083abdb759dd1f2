"""Benchmark of the committee's report (`cds_service.analytics.report`) over a year of data.

Fills a fresh store with `--rows` evaluations spread over 365 days: ~0.6 cards per evaluation
from 47 rules (4 of them silent) with stored card JSON of the real cards' size (~3 KB), feedback
on about half the issued cards (1 in 10 answered twice, overrides with coded reasons, comments or
both), 400 clinicians and 300,000 patients (pseudonyms), a follow-up for 1 in 10 non-critical
cards and a possible miss for 1 in 20 of those. Cards carry their outcome as the store settles
it. PostgreSQL is a throwaway server (tests.postgres) loaded by COPY; SQLite is a temporary file
loaded by multi-row inserts. Then runs the whole year's report 5 times and prints the median,
min and max.

    .venv/bin/python bench/report_bench.py [--rows 1000000] [--backend postgresql|sqlite|both]
"""

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the throwaway PostgreSQL server is a tests helper

from cds_service.analytics import report  # noqa: E402
from cds_service.storage import (  # noqa: E402
    Store,
    cards,
    evaluations,
    feedback,
    follow_ups,
    monday,
    possible_misses,
    settled,
)
from tests.postgres import postgres_server  # noqa: E402

START = datetime(2025, 11, 1, tzinfo=UTC)
DAYS = 365
CHUNK = 20_000  # evaluations generated and loaded at a time
RUNS = 5
CLINICIANS = 400
PATIENTS = 300_000
SERVICES = ["patient-view", "order-select", "order-sign"]
SERVICE_WEIGHTS = [0.7, 0.2, 0.1]
CARDS_PER_EVALUATION = [0, 1, 2, 3]
CARDS_WEIGHTS = [0.5, 0.4, 0.08, 0.02]  # mean 0.62
REASON_SYSTEM = "https://spine-cds.org/fhir/CodeSystem/override-reason"
REASONS = [
    ("already-managed", "Already referred or under specialist care"),
    ("red-flag-excluded", "Red flag already excluded"),
    ("patient-declined", "Patient declined"),
    ("not-indicated", "Not clinically indicated"),
    ("recent-imaging", "Recent imaging available"),
    ("contraindicated", "Contraindicated for this patient"),
    ("other-pathway", "Managed in another pathway"),
    ("duplicate", "Duplicate of an existing order"),
]


@dataclass
class Rule:
    id: str
    indicator: str
    silent: bool
    weight: float
    content: str  # the stored card JSON with UUID and FINDINGS placeholders


@dataclass
class Chunk:
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    cards: list[dict[str, Any]] = field(default_factory=list)
    feedback: list[dict[str, Any]] = field(default_factory=list)
    follow_ups: list[dict[str, Any]] = field(default_factory=list)
    possible_misses: list[dict[str, Any]] = field(default_factory=list)


def card_template(rule_id: str, indicator: str) -> str:
    """A stored card the shape and size of the service's (~3 KB of JSON)."""
    card = {
        "uuid": "UUID",
        "summary": f"{rule_id.replace('-', ' ').capitalize()}: review and act",
        "detail": "**Why this card:** "
        + f"the criteria of rule {rule_id} are met in the patient's record; " * 6
        + "\n\n**Findings:**\nFINDINGS\n\n**What to do now:** "
        + "follow the pathway, document the decision and tell the patient why. " * 4,
        "indicator": indicator,
        "source": {
            "label": "NICE NG59: Low back pain and sciatica in over 16s",
            "url": "https://www.nice.org.uk/guidance/ng59",
            "topic": {"system": REASON_SYSTEM, "code": rule_id, "display": rule_id},
        },
        "overrideReasons": [
            {"system": REASON_SYSTEM, "code": code, "display": display} for code, display in REASONS
        ],
        "suggestions": [
            {
                "label": f"Order: {rule_id}",
                "uuid": "UUID-s",
                "isRecommended": True,
                "actions": [
                    {
                        "type": "create",
                        "description": f"ServiceRequest for {rule_id}",
                        "resource": {
                            "resourceType": "ServiceRequest",
                            "status": "draft",
                            "intent": "proposal",
                            "code": {"coding": [{"system": REASON_SYSTEM, "code": rule_id}]},
                            "subject": {"reference": "Patient/PATIENT"},
                            "reasonCode": [{"text": f"Back pain triage, rule {rule_id}"}],
                        },
                    }
                ],
            }
        ],
        "links": [
            {
                "label": "Review this recommendation",
                "url": "https://cds.example.org/review",
                "type": "smart",
                "appContext": "UUID",
            }
        ],
        "extension": {"org.spine-cds.rule": {"id": rule_id, "version": "1.1.0"}},
    }
    return json.dumps(card)


def make_rules(rng: random.Random) -> list[Rule]:
    """47 rules, a few much commoner than the rest, 4 of them silent."""
    rules = []
    for n in range(47):
        rule_id = f"rule-{n:02d}-" + rng.choice(["red-flag", "imaging", "referral", "therapy"])
        indicator = "critical" if n % 7 == 0 else "warning" if n % 3 else "info"
        weight = 1 / (n + 1)
        rules.append(
            Rule(rule_id, indicator, n % 12 == 5, weight, card_template(rule_id, indicator))
        )
    return rules


def override_reason(rng: random.Random) -> dict[str, Any] | None:
    """Mostly a coded reason; some a comment, some both, a few nothing."""
    draw = rng.random()
    code, display = rng.choices(REASONS, weights=[8, 5, 4, 3, 2, 2, 1, 1])[0]
    coded = {"system": REASON_SYSTEM, "code": code, "display": display}
    if draw < 0.7:
        return {"reason": coded}
    if draw < 0.85:
        return {"userComment": "discussed with the patient"}
    if draw < 0.95:
        return {"reason": coded, "userComment": "see notes"}
    return None


def answers(rng: random.Random, card: str, at: datetime, next_id: int) -> list[dict[str, Any]]:
    """The feedback rows of one issued card: none for about half, one or two for the rest."""
    if rng.random() < 0.5:
        return []
    rows = []
    outcome = "accepted" if rng.random() < 0.55 else "overridden"
    for n in range(2 if rng.random() < 0.1 else 1):
        at += timedelta(minutes=rng.expovariate(1 / (20 if n == 0 else 240)))
        rows.append(
            {
                "id": next_id + n,
                "card_uuid": card,
                "service": "patient-view",
                "outcome": outcome,
                "outcome_timestamp": at,
                "accepted_suggestions": [{"id": f"{card}-s"}] if outcome == "accepted" else None,
                "override_reason": override_reason(rng) if outcome == "overridden" else None,
                "received_at": at + timedelta(seconds=2),
            }
        )
        outcome = "overridden" if outcome == "accepted" else "accepted"
    return rows


def chunks(total: int, rules: list[Rule], rng: random.Random) -> Iterator[Chunk]:
    """The year's rows, `CHUNK` evaluations at a time, in time order."""
    step = timedelta(days=DAYS) / total
    weights = [rule.weight for rule in rules]
    feedback_id = 1
    chunk = Chunk()
    for n in range(total):
        created = START + n * step + timedelta(seconds=rng.random() * step.total_seconds())
        fired = rng.choices(rules, weights, k=rng.choices(CARDS_PER_EVALUATION, CARDS_WEIGHTS)[0])
        service = rng.choices(SERVICES, SERVICE_WEIGHTS)[0]
        clinician = f"{rng.randrange(CLINICIANS):064x}"
        chunk.evaluations.append(
            {
                "id": n + 1,
                "hook_instance": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "service": service,
                "ruleset_version": "0.4.0",
                "rules_fired": [rule.id for rule in fired] + ["derive-back-pain", "derive-chronic"],
                "duration_ms": rng.uniform(1, 10),
                "created_at": created,
                "patient_key": f"{rng.randrange(PATIENTS):064x}",
                "clinician_key": clinician,
            }
        )
        for rule in {rule.id: rule for rule in fired}.values():
            card = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            findings = f"- Condition/c{rng.randrange(10**6)}, {created.date()}"
            content = rule.content.replace("UUID", card).replace("FINDINGS", findings)
            chunk.cards.append(
                {
                    "uuid": card,
                    "evaluation_id": n + 1,
                    "rule_id": rule.id,
                    "indicator": rule.indicator,
                    "summary": rule.id,
                    "content": content,
                    "capability_hash": f"{rng.getrandbits(256):064x}",
                    "silent": rule.silent,
                    "service": service,
                    "created_at": created,
                    "week": monday(created),
                    "clinician_key": clinician,
                }
            )
            if rule.indicator != "critical" and rng.random() < 0.1:
                follow_up(chunk, rng, card, rule.id, created, n + 1)
            rows = [] if rule.silent else answers(rng, card, created, feedback_id)
            feedback_id += len(rows)
            chunk.feedback.extend(rows)
            chunk.cards[-1] |= settled([SimpleNamespace(**row) for row in rows])  # as the store
        if len(chunk.evaluations) == CHUNK or n == total - 1:
            yield chunk
            chunk = Chunk()


def follow_up(
    chunk: Chunk, rng: random.Random, card: str, rule: str, created: datetime, later: int
) -> None:
    """A follow-up of `card` by the evaluation `later` (its own: any row the FK accepts), and
    1 time in 20 a possible miss."""
    at = created + timedelta(days=rng.uniform(1, 90))
    chunk.follow_ups.append(
        {
            "card_uuid": card,
            "rule_id": rule,
            "card_at": created,
            "evaluation_id": later,
            "followed_at": at,
        }
    )
    if rng.random() < 0.05:
        chunk.possible_misses.append(
            {
                "card_uuid": card,
                "rule_id": rule,
                "card_at": created,
                "evaluation_id": later,
                "found_at": at,
                "red_flag_rule": "red-flag-malignancy",
                "evidence": [
                    {"system": "ICD-10-CM", "code": "C79.51", "display": "x", "date": None}
                ],
            }
        )


def copy_rows(cursor: psycopg.Cursor[Any], table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """COPY the rows (JSON columns as text; card content is JSON text already)."""
    names = list(rows[0])
    json_columns = {
        name for name in names if isinstance(table.c[name].type, sa.JSON) and name != "content"
    }
    with cursor.copy(f"COPY {table.name} ({', '.join(names)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(
                [json.dumps(row[name]) if name in json_columns else row[name] for name in names]
            )


def load_postgresql(url: str, total: int, rules: list[Rule], rng: random.Random) -> None:
    """COPY the rows in, then bring the id sequences level and VACUUM ANALYZE."""
    dsn = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn) as connection:
        with connection.cursor() as cursor:
            for chunk in chunks(total, rules, rng):
                for table, rows in [
                    (evaluations, chunk.evaluations),
                    (cards, chunk.cards),
                    (feedback, chunk.feedback),
                    (follow_ups, chunk.follow_ups),
                    (possible_misses, chunk.possible_misses),
                ]:
                    if rows:
                        copy_rows(cursor, table, rows)
                connection.commit()
            for name in ("evaluations", "feedback", "possible_misses"):
                cursor.execute(
                    f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), max(id)) FROM {name}"
                )
        connection.commit()
        connection.autocommit = True
        connection.execute("VACUUM ANALYZE")


def load_sqlite(engine: sa.Engine, total: int, rules: list[Rule], rng: random.Random) -> None:
    """Multi-row inserts through SQLAlchemy (the store's own formats), then ANALYZE."""
    as_text = cards.insert().values(content=sa.bindparam("content", type_=sa.Text))
    for chunk in chunks(total, rules, rng):
        with engine.begin() as connection:
            connection.execute(evaluations.insert(), chunk.evaluations)
            connection.execute(as_text, chunk.cards)
            for table, rows in [
                (feedback, chunk.feedback),
                (follow_ups, chunk.follow_ups),
                (possible_misses, chunk.possible_misses),
            ]:
                if rows:
                    connection.execute(table.insert(), rows)
    with engine.begin() as connection:
        connection.execute(sa.text("ANALYZE"))


def counts(engine: sa.Engine) -> dict[str, int]:
    """Rows per table (and the silent cards among the cards)."""
    queries = {
        "evaluations": sa.select(sa.func.count()).select_from(evaluations),
        "cards": sa.select(sa.func.count()).select_from(cards),
        "silent cards": sa.select(sa.func.count()).select_from(cards).where(cards.c.silent),
        "feedback": sa.select(sa.func.count()).select_from(feedback),
        "follow-ups": sa.select(sa.func.count()).select_from(follow_ups),
        "possible misses": sa.select(sa.func.count()).select_from(possible_misses),
    }
    with engine.connect() as connection:
        return {name: connection.execute(query).scalar_one() for name, query in queries.items()}


def time_report(name: str, engine: sa.Engine) -> None:
    """Run the whole year's report `RUNS` times; print the timings and what it found."""
    since, until = START.date(), START.date() + timedelta(days=DAYS)
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        result = report(engine, since, until)
        times.append(time.perf_counter() - started)
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(
        f"{name}: report over {DAYS} days, {RUNS} runs: median {statistics.median(times):.2f} s,"
        f" min {min(times):.2f} s, max {max(times):.2f} s (machine load average {load})"
    )
    print(
        f"{name}: totals {result['totals']}; {len(result['rules'])} rules,"
        f" {len(result['weeks'])} week rows, {len(result['override_reasons'])} reason rows,"
        f" {len(result['safety']['rules'])} safety rows,"
        f" {len(result['clinicians']['rows'])} clinician rows"
    )


def bench(name: str, url: str, total: int) -> None:
    """Load a year into the store at `url`, then time the whole year's report."""
    store = Store(url)
    rng = random.Random(2026)
    rules = make_rules(rng)
    started = time.perf_counter()
    if name == "postgresql":
        load_postgresql(url, total, rules, rng)
    else:
        load_sqlite(store.engine, total, rules, rng)
    loaded = time.perf_counter() - started
    print(f"{name}: generated and loaded in {loaded:.1f} s: {counts(store.engine)}")
    time_report(name, store.engine)
    store.engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000, help="evaluations")
    parser.add_argument("--backend", choices=["postgresql", "sqlite", "both"], default="postgresql")
    args = parser.parse_args()
    if args.backend in ("postgresql", "both"):
        with postgres_server() as url:
            bench("postgresql", url, args.rows)
    if args.backend in ("sqlite", "both"):
        with tempfile.TemporaryDirectory(prefix="spine-cds-bench-") as folder:
            bench("sqlite", f"sqlite:///{Path(folder) / 'store.db'}", args.rows)


if __name__ == "__main__":
    main()
