"""Durable storage (SQLite by default, PostgreSQL by URL): evaluation audit, card feedback and
the safety monitor's follow-ups.

The schema is created and upgraded by the Alembic migrations in `migrations/`, as a step of its
own (`cds-service store migrate`; try-it mode runs it at start-up); a store that is missing or
behind is refused in one line (StoreNotReady), never created empty. No token is stored, and no
patient or clinician id outside a stored card's draft ServiceRequest: an evaluation keeps its
hookInstance, service, rule set version, the rules that fired, the cards issued, its duration,
and keyed pseudonyms (HMAC) of its patient and clinician.
"""

import hashlib
import hmac
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

import orjson
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from cds_service.errors import Unavailable

P = ParamSpec("P")
T = TypeVar("T")

REPORT_COLUMNS = (
    *("created_at", "week", "rule_id", "service", "indicator", "silent", "clinician_key"),
    *("outcome", "first_feedback_at", "reason_code", "reason_display", "explained"),
)
"""The cards' columns the committee's report reads, all in one index."""

metadata = sa.MetaData()
"""The schema, the one source: the migrations build it and a test fails when they drift apart."""

evaluations = sa.Table(
    "evaluations",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("hook_instance", sa.String(200), nullable=False),
    sa.Column("service", sa.String(64), nullable=False),
    sa.Column("ruleset_version", sa.String(32), nullable=False),
    sa.Column("rules_fired", sa.JSON, nullable=False),
    sa.Column("duration_ms", sa.Float, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("patient_key", sa.String(64), nullable=True),
    sa.Column("clinician_key", sa.String(64), nullable=True),
    sa.Index("evaluations_created_at", "created_at", "service"),  # the report's count
    sa.Index("evaluations_patient_key", "patient_key", "created_at"),
)
cards = sa.Table(
    "cards",
    metadata,
    sa.Column("uuid", sa.String(64), primary_key=True),
    sa.Column("evaluation_id", sa.Integer, sa.ForeignKey("evaluations.id"), nullable=False),
    sa.Column("rule_id", sa.String(100), nullable=False),
    sa.Column("indicator", sa.String(16), nullable=False),
    sa.Column("summary", sa.String(200), nullable=False),
    sa.Column("content", sa.JSON, nullable=True),
    sa.Column("capability_hash", sa.String(64), nullable=True),
    sa.Column("silent", sa.Boolean, nullable=False, server_default=sa.false()),
    # Copied from the evaluation, so the committee's report reads the cards alone (always
    # written; nullable only because migration 0006 added them to a table with rows).
    sa.Column("service", sa.String(64), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("week", sa.Date, nullable=True),
    sa.Column("clinician_key", sa.String(64), nullable=True),
    # Its outcome, settled from its feedback whenever that changes (`settled`).
    sa.Column("outcome", sa.String(16), nullable=True),
    sa.Column("first_feedback_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("reason_code", sa.String(200), nullable=True),
    sa.Column("reason_display", sa.String(500), nullable=True),
    sa.Column("explained", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("cards_evaluation_id", "evaluation_id"),
    # What the report reads of a card, in the index: scanned without the card's JSON.
    sa.Index("cards_report", *REPORT_COLUMNS),
)
feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("card_uuid", sa.String(64), sa.ForeignKey("cards.uuid"), nullable=False),
    sa.Column("service", sa.String(64), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("outcome_timestamp", sa.DateTime(timezone=True), nullable=False),
    sa.Column("accepted_suggestions", sa.JSON, nullable=True),
    sa.Column("override_reason", sa.JSON, nullable=True),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("card_uuid", "outcome", "outcome_timestamp", name="feedback_once"),
)
_INSERT_EVALUATION = evaluations.insert()
_INSERT_CARDS = cards.insert()
"""Built once: a statement's cache key is computed once, not per write."""

follow_ups = sa.Table(
    "follow_ups",
    metadata,
    sa.Column("card_uuid", sa.String(64), sa.ForeignKey("cards.uuid"), primary_key=True),
    sa.Column("rule_id", sa.String(100), nullable=False),
    sa.Column("card_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("evaluation_id", sa.Integer, sa.ForeignKey("evaluations.id"), nullable=False),
    sa.Column("followed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("follow_ups_card_at", "card_at"),
)
"""A watched card whose patient was evaluated again within the window (the first time)."""
possible_misses = sa.Table(
    "possible_misses",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("card_uuid", sa.String(64), sa.ForeignKey("cards.uuid"), nullable=False),
    sa.Column("rule_id", sa.String(100), nullable=False),
    sa.Column("card_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("evaluation_id", sa.Integer, sa.ForeignKey("evaluations.id"), nullable=False),
    sa.Column("found_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("red_flag_rule", sa.String(100), nullable=False),
    sa.Column("evidence", sa.JSON, nullable=False),
    sa.UniqueConstraint("card_uuid", "red_flag_rule", name="possible_miss_once"),
    sa.Index("possible_misses_card_at", "card_at"),
)
"""A watched card followed, within the window, by an evaluation where a red-flag rule fired."""
jwt_ids = sa.Table(
    "jwt_ids",
    metadata,
    sa.Column("issuer", sa.String(300), primary_key=True),
    sa.Column("jti", sa.String(300), primary_key=True),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, index=True),
)


MIGRATION_LOCK = 0x5350494E45434453
"""PostgreSQL advisory lock key held while migrating ("SPINECDS"): migrators run one at a time."""


class StoreNotReady(Exception):
    """The store is missing, cannot be opened, or its schema is not this version's."""


class UnknownCards(Exception):
    """Feedback names cards this service never issued (or no longer holds)."""


@dataclass(frozen=True)
class IssuedCard:
    """A card as the audit keeps it: the rule behind it, and whether it was held back."""

    rule_id: str
    card: dict[str, Any]
    """The card's JSON as answered (or, silent, as it would have been)."""
    silent: bool = False


@dataclass(frozen=True)
class Linkage:
    """Whom an evaluation is about and who asked, as keyed pseudonyms (None: not linked)."""

    patient: str | None = None
    clinician: str | None = None


@dataclass(frozen=True)
class Audited:
    """An evaluation as recorded: its id and when."""

    id: int
    created_at: datetime


@dataclass(frozen=True)
class RedFlag:
    """A red-flag rule that fired, with the codes of the evidence behind it."""

    rule_id: str
    evidence: list[dict[str, Any]]
    """Per entry: `system` (its readable name), `code`, `display` and `date` (or None)."""


class AuditStore(Protocol):
    """Where evaluations and the cards they issued are kept (and purged past retention)."""

    def record_evaluation(
        self,
        hook_instance: str,
        service: str,
        ruleset_version: str,
        rules_fired: list[str],
        issued: list[IssuedCard],
        duration_ms: float,
        linkage: Linkage = ...,
    ) -> Audited: ...

    def follow_up(
        self,
        audited: Audited,
        patient_key: str,
        window_days: float,
        watched: Collection[str],
        red_flags: list[RedFlag],
    ) -> None: ...

    def reviewed_card(self, capability: str, max_age_seconds: float) -> dict[str, Any] | None: ...

    def purge(self, audit_days: float, feedback_days: float) -> dict[str, int]: ...

    def ping(self) -> bool: ...

    @property
    def local(self) -> bool:
        """Writes go to a file of this machine (no network): done on the event loop, where a
        hop to a worker thread would cost more than the write."""
        ...


class FeedbackStore(Protocol):
    """Where card outcomes are kept; a repeat is a no-op, an unknown card UnknownCards."""

    def record_feedback(self, service: str, items: list[dict[str, Any]]) -> None: ...


class ReplayCache(Protocol):
    """JWT ids seen, across every worker: `first_use` is False for a replay."""

    def first_use(self, issuer: str, jti: str, expires: float) -> bool: ...


def settled(rows: list[Any]) -> dict[str, Any]:
    """A card's outcome from its feedback rows (`outcome`, `outcome_timestamp`, `override_reason`,
    `id`): the latest decides, an override winning a tie (arrival order within a batch means
    nothing); its reason is that override's (the last received); none when it has no feedback.
    `explained`: an override with a coded reason or a comment."""
    if not rows:
        return {
            "outcome": None,
            "first_feedback_at": None,
            "reason_code": None,
            "reason_display": None,
            "explained": False,
        }
    last = max(row.outcome_timestamp for row in rows)
    overrides = [r for r in rows if r.outcome_timestamp == last and r.outcome == "overridden"]
    deciding = max(overrides, key=lambda row: row.id) if overrides else None
    reason = (deciding.override_reason or {}) if deciding else {}
    coding = reason.get("reason") or {}
    return {
        "outcome": "overridden" if deciding else "accepted",
        "first_feedback_at": min(row.outcome_timestamp for row in rows),
        "reason_code": coding.get("code"),
        "reason_display": coding.get("display"),
        "explained": coding.get("code") is not None or reason.get("userComment") is not None,
    }


def monday(moment: datetime) -> date:
    """The Monday (UTC) of `moment`'s week: the report's week."""
    day = moment.astimezone(UTC).date()
    return day - timedelta(days=day.weekday())


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _capability_hash(card: dict[str, Any]) -> str | None:
    """The hash of the secret in the card's review link (the store never holds the secret)."""
    for link in card.get("links", []):
        _, dot, secret = str(link.get("appContext", "")).partition(".")
        if dot and secret:
            return _sha256(secret)
    return None


def _without_secrets(card: dict[str, Any]) -> dict[str, Any]:
    """The card as stored: its review links keep the card uuid, not the capability's secret."""
    if "links" not in card:
        return card
    links = [
        {**link, "appContext": str(link.get("appContext", "")).partition(".")[0]}
        for link in card["links"]
    ]
    return {**card, "links": links}


def _probe_row() -> dict[str, Any]:
    """An evaluation row of 8 KB, for the readiness probe's write (never committed)."""
    return {
        "hook_instance": "readiness-probe",
        "service": "-",
        "ruleset_version": "-",
        "rules_fired": ["x" * 8192],
        "duration_ms": 0.0,
        "created_at": datetime.now(UTC),
    }


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    return config


def _json(value: Any) -> str:
    """JSON columns' text, by orjson (a tenth of the standard library's time on a card)."""
    return orjson.dumps(value).decode()


def _sqlite_pragmas(synchronous: str) -> Callable[[Any, Any], None]:
    """The settings of each new SQLite connection."""

    def on_connect(connection: Any, _: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return on_connect


def _available(
    method: "Callable[Concatenate[Store, P], T]",
) -> "Callable[Concatenate[Store, P], T]":
    """A database that cannot be reached or written (down, disk full) raises Unavailable."""

    def call(store: "Store", /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            result = method(store, *args, **kwargs)
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            store.failing = True
            raise Unavailable(type(exc.orig or exc).__name__) from exc
        store.failing = False
        return result

    return call


class Store(AuditStore, FeedbackStore, ReplayCache):
    """The service's SQL database; every method is synchronous (call it off the event loop)."""

    def __init__(self, url: str, migrate: bool = True, sync_seconds: float = 0) -> None:
        """Open the store; with `migrate`, create or upgrade its schema first.

        SQLite: with `sync_seconds` 0 every commit is synced to disk before it returns
        (synchronous=FULL); above 0 a commit is written to the operating system, which a
        crash of the process cannot undo, and `sync` (called every `sync_seconds`) puts it on
        disk (synchronous=NORMAL: an OS crash or power loss can undo the commits since).
        """
        self.failing = False
        """The last operation could not reach or write the database (readiness reads it)."""
        self.sync_seconds = sync_seconds
        file = sa.make_url(url).get_backend_name() == "sqlite"
        # A server's connection can drop between calls (pinged at checkout); a file's cannot.
        self.engine: Engine = sa.create_engine(url, pool_pre_ping=not file, json_serializer=_json)
        if file:
            synchronous = "NORMAL" if sync_seconds > 0 else "FULL"
            sa.event.listen(self.engine, "connect", _sqlite_pragmas(synchronous))
        if migrate:
            self.migrate()

    @property
    def local(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @property
    def syncs(self) -> bool:
        """Commits wait for `sync` to be on disk (SQLite with `sync_seconds` above 0)."""
        return self.local and self.sync_seconds > 0

    @_available
    def sync(self) -> None:
        """Put every commit so far on disk: a WAL checkpoint, before which SQLite syncs the
        log and after which the database file (a no-op on PostgreSQL, which syncs each)."""
        if not self.local:
            return
        with self.engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

    @property
    def location(self) -> str:
        """Where the store is, for messages (a password is masked)."""
        return self.engine.url.render_as_string(hide_password=True)

    def migrate(self) -> tuple[str | None, str | None]:
        """Create or upgrade the schema (Alembic migrations) and return its revision before and
        after. On PostgreSQL an advisory lock makes concurrent migrators wait for one another:
        the first upgrades, the others find the schema current."""
        config = _alembic_config()
        with self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK)))
            before = MigrationContext.configure(connection).get_current_revision()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            after = MigrationContext.configure(connection).get_current_revision()
        return before, after

    def check_schema(self) -> None:
        """Raise StoreNotReady unless the store exists and has this version's schema. A SQLite
        file that does not exist is not created."""
        path = self.engine.url.database
        on_disk = self.engine.dialect.name == "sqlite" and path not in (None, "", ":memory:")
        if on_disk and not Path(str(path)).is_file():
            raise StoreNotReady(
                f"no store at {Path(str(path)).resolve()}: create it with `cds-service store "
                "migrate` (or set CDS_DATABASE_URL)"
            )
        try:
            with self.engine.connect() as connection:
                current = MigrationContext.configure(connection).get_current_revision()
        except sa.exc.DBAPIError as exc:
            reason = str(exc.orig or exc).strip().splitlines()[0]
            raise StoreNotReady(f"cannot open the store at {self.location}: {reason}") from exc
        head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
        if current != head:
            raise StoreNotReady(
                f"the store at {self.location} has schema {current or 'none'}, this version "
                f"needs {head}: run `cds-service store migrate`"
            )

    def ping(self) -> bool:
        """True when the database answers and, once a write failed, takes one again: a probe
        row larger than a page (it needs new space, as audit writes do), always rolled back."""
        try:
            with self.engine.connect() as connection:
                transaction = connection.begin()
                try:
                    connection.execute(sa.text("SELECT 1"))
                    if self.failing:
                        connection.execute(evaluations.insert().values(_probe_row()))
                finally:
                    transaction.rollback()
        except sa.exc.SQLAlchemyError:
            return False
        self.failing = False
        return True

    @_available
    def record_evaluation(
        self,
        hook_instance: str,
        service: str,
        ruleset_version: str,
        rules_fired: list[str],
        issued: list[IssuedCard],
        duration_ms: float,
        linkage: Linkage = Linkage(),
    ) -> Audited:
        """Audit one evaluation and keep the cards it issued (their JSON, for review) and the
        would-be cards of silent rules."""
        now = datetime.now(UTC)
        with self.engine.begin() as connection:
            inserted = connection.execute(
                _INSERT_EVALUATION,  # parameters apart: the compiled statement is cached
                {
                    "hook_instance": hook_instance,
                    "service": service,
                    "ruleset_version": ruleset_version,
                    "rules_fired": rules_fired,
                    "duration_ms": duration_ms,
                    "created_at": now,
                    "patient_key": linkage.patient,
                    "clinician_key": linkage.clinician,
                },
            ).inserted_primary_key
            assert inserted is not None  # an INSERT always has one
            evaluation_id = inserted[0]
            if issued:
                connection.execute(
                    _INSERT_CARDS,
                    [
                        {
                            "uuid": entry.card["uuid"],
                            "evaluation_id": evaluation_id,
                            "rule_id": entry.rule_id,
                            "indicator": entry.card["indicator"],
                            "summary": entry.card["summary"],
                            "content": _without_secrets(entry.card),
                            "capability_hash": None
                            if entry.silent
                            else _capability_hash(entry.card),
                            "silent": entry.silent,
                            "service": service,
                            "created_at": now,
                            "week": monday(now),
                            "clinician_key": linkage.clinician,
                        }
                        for entry in issued
                    ],
                )
        return Audited(evaluation_id, now)

    @_available
    def follow_up(
        self,
        audited: Audited,
        patient_key: str,
        window_days: float,
        watched: Collection[str],
        red_flags: list[RedFlag],
    ) -> None:
        """The safety monitor, after an evaluation of the patient `patient_key`: each card of a
        `watched` rule issued to them in the `window_days` before is followed up (once), and is
        a possible miss for each red flag found now (once per red-flag rule)."""
        earlier = (
            sa.select(cards.c.uuid, cards.c.rule_id, evaluations.c.created_at)
            .join(evaluations, evaluations.c.id == cards.c.evaluation_id)
            .where(
                evaluations.c.patient_key == patient_key,
                evaluations.c.created_at >= audited.created_at - timedelta(days=window_days),
                evaluations.c.created_at <= audited.created_at,
                evaluations.c.id != audited.id,
                cards.c.rule_id.in_(sorted(watched)),
            )
        )
        insert = self._insert()
        with self.engine.begin() as connection:
            found = connection.execute(earlier).all()
            if not found:
                return
            connection.execute(
                insert(follow_ups).on_conflict_do_nothing(index_elements=["card_uuid"]),
                [
                    {
                        "card_uuid": card.uuid,
                        "rule_id": card.rule_id,
                        "card_at": card.created_at,
                        "evaluation_id": audited.id,
                        "followed_at": audited.created_at,
                    }
                    for card in found
                ],
            )
            if red_flags:
                connection.execute(
                    insert(possible_misses).on_conflict_do_nothing(
                        index_elements=["card_uuid", "red_flag_rule"]
                    ),
                    [
                        {
                            "card_uuid": card.uuid,
                            "rule_id": card.rule_id,
                            "card_at": card.created_at,
                            "evaluation_id": audited.id,
                            "found_at": audited.created_at,
                            "red_flag_rule": flag.rule_id,
                            "evidence": flag.evidence,
                        }
                        for card in found
                        for flag in red_flags
                    ],
                )

    def _insert(self) -> Callable[[sa.Table], Any]:
        """The dialect's INSERT, which has ON CONFLICT DO NOTHING."""
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        insert: Callable[[sa.Table], Any] = dialect.insert
        return insert

    @_available
    def first_use(self, issuer: str, jti: str, expires: float) -> bool:
        """Record a JWT id; False when it was seen before (a replay), in any worker."""
        now = datetime.now(UTC)
        with self.engine.begin() as connection:
            connection.execute(jwt_ids.delete().where(jwt_ids.c.expires_at < now))
            try:
                with connection.begin_nested():
                    connection.execute(
                        jwt_ids.insert().values(
                            issuer=issuer,
                            jti=jti,
                            expires_at=datetime.fromtimestamp(expires, UTC),
                        )
                    )
            except sa.exc.IntegrityError:
                return False
        return True

    @_available
    def reviewed_card(self, capability: str, max_age_seconds: float) -> dict[str, Any] | None:
        """The card a review capability opens (`<card uuid>.<secret>`, from its SMART link's
        appContext), while it is younger than `max_age_seconds`; otherwise None."""
        uuid, _, secret = capability.partition(".")
        oldest = datetime.now(UTC) - timedelta(seconds=max_age_seconds)
        query = (
            sa.select(cards.c.content, cards.c.capability_hash)
            .join(evaluations, evaluations.c.id == cards.c.evaluation_id)
            .where(cards.c.uuid == uuid, evaluations.c.created_at >= oldest)
        )
        with self.engine.connect() as connection:
            row = connection.execute(query).one_or_none()
        if row is None or row.capability_hash is None or not secret:
            return None
        if not hmac.compare_digest(row.capability_hash, _sha256(secret)):
            return None
        return row.content if isinstance(row.content, dict) else None

    @_available
    def purge(self, audit_days: float, feedback_days: float) -> dict[str, int]:
        """Delete feedback older than `feedback_days`, evaluations older than `audit_days` with
        their cards (a card that still has feedback stays as long as its feedback, for the
        committee's reports) and the monitor's rows on them, and expired JWT ids; returns how
        many rows of each."""
        now = datetime.now(UTC)
        old_audit = now - timedelta(days=audit_days)
        old_feedback = now - timedelta(days=feedback_days)
        expired = sa.select(evaluations.c.id).where(evaluations.c.created_at < old_audit)
        with_feedback = sa.select(feedback.c.card_uuid)
        old = feedback.c.received_at < old_feedback
        with self.engine.begin() as connection:
            answered = connection.execute(sa.select(feedback.c.card_uuid).where(old).distinct())
            stale = list(answered.scalars())
            expired_cards = sa.select(cards.c.uuid).where(cards.c.evaluation_id.in_(expired))
            deleted = {  # the monitor's rows go with the card or the later evaluation they name
                "possible_misses": connection.execute(
                    possible_misses.delete().where(
                        possible_misses.c.card_uuid.in_(expired_cards)
                        | possible_misses.c.evaluation_id.in_(expired)
                    )
                ).rowcount,
                "follow_ups": connection.execute(
                    follow_ups.delete().where(
                        follow_ups.c.card_uuid.in_(expired_cards)
                        | follow_ups.c.evaluation_id.in_(expired)
                    )
                ).rowcount,
                "feedback": connection.execute(feedback.delete().where(old)).rowcount,
                "cards": connection.execute(
                    cards.delete().where(
                        cards.c.evaluation_id.in_(expired), cards.c.uuid.not_in(with_feedback)
                    )
                ).rowcount,
                "evaluations": connection.execute(
                    evaluations.delete().where(
                        evaluations.c.created_at < old_audit,
                        evaluations.c.id.not_in(sa.select(cards.c.evaluation_id)),
                    )
                ).rowcount,
                "jwt_ids": connection.execute(
                    jwt_ids.delete().where(jwt_ids.c.expires_at < now)
                ).rowcount,
            }
            self._settle(connection, stale)  # cards kept whose feedback went (or some of it)
        return deleted

    def settle(self, card_uuids: Collection[str]) -> None:
        """Set these cards' outcome from their feedback (`settled`): feedback written around
        the store (imports, tests) is counted once this has run."""
        with self.engine.begin() as connection:
            self._settle(connection, card_uuids)

    @staticmethod
    def _settle(connection: sa.Connection, card_uuids: Collection[str]) -> None:
        wanted = sorted(set(card_uuids))
        if not wanted:
            return
        rows = connection.execute(
            sa.select(
                feedback.c.card_uuid,
                feedback.c.id,
                feedback.c.outcome,
                feedback.c.outcome_timestamp,
                feedback.c.override_reason,
            ).where(feedback.c.card_uuid.in_(wanted))
        ).all()
        by_card: dict[str, list[Any]] = {uuid: [] for uuid in wanted}
        for row in rows:
            by_card[row.card_uuid].append(row)
        connection.execute(
            cards.update().where(cards.c.uuid == sa.bindparam("card")),
            [{"card": uuid, **settled(answers)} for uuid, answers in by_card.items()],
        )

    @_available
    def record_feedback(self, service: str, items: list[dict[str, Any]]) -> None:
        """Store feedback rows; a repeat of (card, outcome, timestamp) is a no-op."""
        wanted = sorted({item["card_uuid"] for item in items})
        now = datetime.now(UTC)
        with self.engine.begin() as connection:
            known = set(  # locked: one transaction at a time settles a card
                connection.execute(
                    sa.select(cards.c.uuid)
                    .where(cards.c.uuid.in_(wanted), ~cards.c.silent)
                    .with_for_update()
                ).scalars()
            )
            missing = [uuid for uuid in wanted if uuid not in known]
            if missing:
                raise UnknownCards(", ".join(missing))
            statement = self._insert()(feedback).on_conflict_do_nothing(
                index_elements=["card_uuid", "outcome", "outcome_timestamp"]
            )
            connection.execute(
                statement, [{**item, "service": service, "received_at": now} for item in items]
            )
            self._settle(connection, wanted)
