"""Prometheus metrics of one app (its own registry, so several apps in a process don't clash).

With several uvicorn workers each process counts for itself; scrape each pod, or run one
worker per pod as `deploy/` does.
"""

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from cds_service.models import CDSResponse

CONTENT_TYPE = CONTENT_TYPE_LATEST
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "cds_request_seconds",
            "Time to answer a CDS Hooks call, prefetch fetching included, by service.",
            ["service"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.cards = Counter(
            "cds_cards",
            "Cards returned, by service and indicator.",
            ["service", "indicator"],
            registry=self.registry,
        )
        self.rules = Counter(
            "cds_rules_fired", "Rules that fired, by rule id.", ["rule"], registry=self.registry
        )
        self.errors = Counter(
            "cds_errors", "Error responses, by HTTP status.", ["status"], registry=self.registry
        )
        self.audit_failures = Counter(
            "cds_audit_failures",
            "Evaluations answered with cards whose audit record could not be written.",
            registry=self.registry,
        )

    def observe(
        self, service: str, seconds: float, response: CDSResponse, fired: list[str]
    ) -> None:
        self.latency.labels(service).observe(seconds)
        for card in response.cards:
            self.cards.labels(service, card.indicator).inc()
        for rule in fired:
            self.rules.labels(rule).inc()

    def error(self, status: int) -> None:
        self.errors.labels(str(status)).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
