"""The CDS Hooks use case behind the routes: discovery, evaluation and feedback.

An evaluation: check the hook, read the context (400 before any fetch), complete the prefetch
from the fhirServer the caller may send us to, run the triage (a large record off the event loop,
one at a time per process), count it, audit it, run the safety monitor, answer. Neither a failed
audit write nor a failed monitor withholds the cards.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date
from functools import partial
from typing import Any, TypeVar

import anyio

from cds_service.errors import CDSError, Unavailable
from cds_service.fhir_client import FetchPolicy, complete_prefetch
from cds_service.hooks import Hook
from cds_service.metrics import Metrics
from cds_service.models import (
    Discovery,
    FeedbackRequest,
    HookRequest,
    ServiceDescriptor,
    dump,
)
from cds_service.prefetch import check_size, read_context
from cds_service.safety import Monitor, Pseudonyms
from cds_service.storage import (
    Audited,
    AuditStore,
    FeedbackStore,
    IssuedCard,
    Linkage,
    RedFlag,
    UnknownCards,
)
from cds_service.triage import Evaluation, Triage, today_utc

log = logging.getLogger("cds_service")

CDS_HOOKS_VERSION = "2.0.1"
"""The CDS Hooks specification the services implement, as discovery's `version` states it."""

INLINE_MAX_ENTRIES = 2_000
"""A record of up to this many entries is evaluated on the event loop: handing it to a worker
thread cost more CPU than most evaluations (its objects move to another core's caches; measured
in docs/performance.md). A larger one goes to a worker thread, so the loop keeps answering."""

T = TypeVar("T")


@dataclass(frozen=True)
class Caller:
    """Who called: the fhirServer prefixes their issuer allows, and the URL they called us at."""

    fhir_servers: list[str]
    base_url: str


class CDSService:
    """The service every CDS Hooks route calls (one per process)."""

    def __init__(
        self,
        triage: Triage,
        audit: AuditStore,
        feedback: FeedbackStore,
        metrics: Metrics,
        fetch: FetchPolicy,
        max_entries: int,
        today: date | None = None,
        pseudonyms: Pseudonyms | None = None,
        monitor: Monitor | None = None,
    ) -> None:
        """`fetch` is the policy for every request, its `fhir_servers` set per caller;
        `max_entries` the evaluation-size budget (`check_size`); `today` fixes the evaluation
        date (demos, tests); `pseudonyms` link evaluations of one patient and one clinician
        (none: not linked), which the safety `monitor` needs."""
        self.triage = triage
        self._audit = audit
        self._feedback = feedback
        self._metrics = metrics
        self._fetch = fetch
        self._max_entries = max_entries
        self._today = today
        self._pseudonyms = pseudonyms
        self._monitor = monitor
        # One evaluation at a time per process: threads add no throughput under the GIL and
        # only lengthen the tail (docs/performance.md); scale out with worker processes.
        self._limiter = anyio.CapacityLimiter(1)

    def hook(self, service_id: str) -> Hook:
        """The hook a service id answers; 404 for an unknown one."""
        hook = self.triage.hooks.get(service_id)
        if hook is None:
            raise CDSError.of(404, "no such CDS service; see GET /cds-services")
        return hook

    def discovery(self) -> Discovery:
        manifest = self.triage.knowledge.manifest
        ruleset = {"name": manifest.name, "version": manifest.version}
        silent = self.triage.silent_rules
        return Discovery(
            services=[
                ServiceDescriptor(
                    id=hook.id,
                    hook=hook.id,
                    title=hook.title,
                    description=hook.description,
                    prefetch=dict(self.triage.queries.templates),
                    version=CDS_HOOKS_VERSION,
                    extension={
                        "org.spine-cds.ruleset": ruleset | ({"silent": silent} if silent else {})
                    },
                )
                for hook in self.triage.hooks.values()
            ]
        )

    async def evaluate(self, hook: Hook, body: HookRequest, caller: Caller) -> dict[str, Any]:
        """The CDS Hooks response (JSON) to `body` at `hook`."""
        started = time.perf_counter()
        if body.hook != hook.id and body.hook not in hook.labelled:
            raise CDSError.of(400, f"hook {body.hook!r} does not match service {hook.id!r}", "hook")
        if body.hook != hook.id:
            log.warning("a %s call labelled %r answered as %s", hook.id, body.hook, hook.id)
        context = read_context(body, hook.context)
        policy = replace(self._fetch, fhir_servers=caller.fhir_servers)
        today = self._today or today_utc()
        queries = self.triage.queries
        prefetch = await complete_prefetch(body, context.patientId, policy, queries, today)
        body = body.model_copy(update={"prefetch": prefetch})
        entries = check_size(body, self._max_entries)
        run = partial(self.triage.run, body, context, hook, today, f"{caller.base_url}/review")
        if entries <= INLINE_MAX_ENTRIES:
            evaluation = run()
        else:
            evaluation = await anyio.to_thread.run_sync(run, limiter=self._limiter)
        duration_ms = (time.perf_counter() - started) * 1000
        self._metrics.observe(
            hook.id, duration_ms / 1000, evaluation.response, evaluation.rules_fired
        )
        response = dump(evaluation.response)
        linkage = self._linkage(context.patientId, context.userId)
        audited = await self._record(
            body.hookInstance, hook.id, evaluation, response, duration_ms, linkage
        )
        if audited is not None and linkage.patient is not None:
            await self._follow_up(audited, linkage.patient, evaluation)
        return response

    def _linkage(self, patient_id: str, user_id: str | None) -> Linkage:
        """The evaluation's pseudonyms (none without a key)."""
        if self._pseudonyms is None:
            return Linkage()
        clinician = self._pseudonyms.clinician(user_id) if user_id else None
        return Linkage(self._pseudonyms.patient(patient_id), clinician)

    async def _record(
        self,
        hook_instance: str,
        service: str,
        evaluation: Evaluation,
        response: dict[str, Any],
        duration_ms: float,
        linkage: Linkage,
    ) -> Audited | None:
        """Audit the evaluation. A documented choice: when the write fails the clinician still
        gets the cards; the gap is logged, counted, and /ready turns 503 so traffic moves."""
        issued = [
            IssuedCard(rule, card)
            for rule, card in zip(evaluation.card_rules, response["cards"], strict=True)
        ]
        issued += [IssuedCard(rule, dump(card), True) for rule, card in evaluation.silent_cards]
        write = partial(
            self._audit.record_evaluation,
            hook_instance,
            service,
            self.triage.knowledge.version,
            evaluation.rules_fired,
            issued,
            duration_ms,
            linkage,
        )
        try:
            return await self._stored(write)
        except Unavailable as exc:
            log.error("audit write failed (%s): cards sent without an audit record", exc)
            self._metrics.audit_failures.inc()
            return None

    async def _follow_up(self, audited: Audited, patient: str, evaluation: Evaluation) -> None:
        """The safety monitor: earlier watched cards of this patient, checked against the red
        flags found now. Whatever goes wrong in it is logged; the cards go out regardless."""
        if self._monitor is None:
            return
        red_flags = [
            RedFlag(
                rule,
                [
                    {
                        "system": e.system,
                        "code": e.code,
                        "display": e.display,
                        "date": e.when.isoformat() if e.when else None,
                    }
                    for e in evidence
                ],
            )
            for rule, evidence in evaluation.red_flags
        ]
        monitor = self._monitor
        follow = partial(
            self._audit.follow_up, audited, patient, monitor.window_days, monitor.watched, red_flags
        )
        try:
            await self._stored(follow)
        except Exception as exc:  # the monitor must never withhold the cards
            # the error's name only: its message may carry the rows' values (patient data)
            log.error(
                "safety monitor failed (%s): evaluation %s not followed up",
                type(exc).__name__,
                audited.id,
            )

    async def _stored(self, call: Callable[[], T]) -> T:
        """A store call: on the event loop for a local store (a file write is shorter than a
        hop to a worker thread), else in a worker thread (network I/O)."""
        if self._audit.local:
            return call()
        return await anyio.to_thread.run_sync(call)

    async def feedback(self, hook: Hook, body: FeedbackRequest) -> int:
        """Store the outcomes of cards this service issued; how many items were received."""
        rows = [item.row() for item in body.feedback]
        try:
            await anyio.to_thread.run_sync(self._feedback.record_feedback, hook.id, rows)
        except UnknownCards as exc:
            raise CDSError.of(400, f"unknown card uuid: {exc}", "feedback.card") from exc
        return len(rows)
