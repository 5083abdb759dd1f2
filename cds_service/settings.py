"""Settings from the environment (prefix `CDS_`), read once when the app is built."""

from datetime import date
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from cds_service.auth import IssuerTrust
from cds_service.knowledge import DEFAULT_RULES_DIR, Mode
from cds_service.safety import Pseudonyms
from cds_service.urls import TrustedURL

SANDBOX = "https://sandbox.cds-hooks.org"
SANDBOX_TRUST = IssuerTrust(
    jku=[f"{SANDBOX}/.well-known/jwks.json"],
    fhir_servers=["https://launch.smarthealthit.org/v/r4/fhir"],
)
"""The public CDS Hooks sandbox: its signing key is published in its repository, so anyone can
sign as it. Trusted only with CDS_TRUST_SANDBOX=true, for trying the service."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CDS_", extra="ignore", env_ignore_empty=True)

    rules_dir: Path = Field(DEFAULT_RULES_DIR, description="Knowledge base folder (rules/).")
    examples_dir: Path = Field(
        DEFAULT_RULES_DIR.parent / "fhir_examples",
        description="Example requests offered by the playground page.",
    )
    auth_disabled: bool = Field(
        False, description="Development only: accept calls without a JWT (logged at start-up)."
    )
    trusted_issuers: dict[str, IssuerTrust] = Field(
        {},
        description="JWT issuers (iss) trusted (JSON): per issuer its keys (jku prefixes, "
        "jwks_url or inline jwks) and the fhir_servers its requests may send the service to. "
        "None by default: every CDS Hooks call is refused until one is configured.",
    )
    trust_sandbox: bool = Field(
        False,
        description="Try-it only: also trust the public CDS Hooks sandbox, whose signing key is "
        "public (anyone can sign as it). Logged as insecure at start-up.",
    )
    public_base_url: TrustedURL | None = Field(
        None,
        description="Base URL clients call; a JWT's aud must be it followed by the endpoint's path "
        "(never the request's Host). Required with authentication on and an issuer trusted.",
    )
    jwt_leeway_seconds: float = Field(30.0, description="Clock skew allowed on exp and iat.")
    database_url: str = Field(
        "sqlite:///spine-cds.db",
        description="SQLAlchemy URL of the store: SQLite file (default) or postgresql+psycopg://...",
    )
    store_sync_seconds: float = Field(
        1.0,
        ge=0,
        description="SQLite: what the store commits (audit, feedback) is on disk within this "
        "many seconds; a crash of the service loses none of it, an OS crash or power loss the "
        "last seconds' (0: each commit is synced before its answer, at about 1 ms of CPU).",
    )
    max_in_flight: int = Field(
        2,
        description="CDS Hooks calls inside the app at once per worker; the rest wait unread.",
    )
    max_queued: int = Field(
        200, description="Calls waiting per worker before more get 503 with Retry-After."
    )
    max_record_entries: int = Field(
        50_000,
        description="Most entries (prefetch Bundles and draftOrders, fetched ones included) one "
        "evaluation reads; a larger record gets 413, so none holds a worker for seconds.",
    )
    max_body_bytes: int = Field(
        5_000_000, description="Largest request body accepted; larger ones get 413."
    )
    body_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="Time a CDS Hooks call's whole body has to arrive once the service reads it "
        "(after admission); a body still incomplete then gets 408 and the connection is closed.",
    )
    header_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="Time a connection has to send its request headers, from opening (or, kept "
        "alive, from the first byte of its next request); late ones are closed.",
    )
    cors_origins: list[str] = Field(
        ["https://sandbox.cds-hooks.org"],
        description='Browser origins allowed to call the service (JSON list; ["*"] for any).',
    )
    fhir_servers: list[TrustedURL] = Field(
        [],
        description="With authentication off only: fhirServer base URL prefixes it may fetch "
        "from (JSON list). With authentication on, each trusted issuer names its own.",
    )
    fhir_allow_private: bool = Field(
        False,
        description="Allow fhirServer addresses on loopback, private or link-local networks "
        "(refused by default: a request must not steer the service into the local network).",
    )
    fhir_timeout_seconds: float = Field(
        5.0, description="Timeout of each request to the client's fhirServer."
    )
    fhir_max_pages: int = Field(20, description="Most search pages followed per prefetch key.")
    fhir_deadline_seconds: float = Field(
        10.0, description="Deadline for all of one request's fetches from its fhirServer."
    )
    fhir_max_answer_bytes: int = Field(
        20_000_000, description="Largest answer (one page or resource) read from a fhirServer."
    )
    log_level: str = Field("info", description="Log level of the JSON logs on stdout.")
    demo_pages: bool | None = Field(
        None,
        description="Serve /playground and the interactive API docs (/docs). Default: on "
        "only with authentication off (try-it mode).",
    )
    metrics_token: str | None = Field(
        None,
        description="Bearer token /metrics requires. With authentication on and none set, "
        "/metrics is not served; with authentication off it is open.",
    )
    frame_ancestors: list[str] = Field(
        [],
        description="Origins that may frame the review and playground pages (JSON list).",
    )
    audit_retention_days: float = Field(
        365, description="Evaluations and their cards older than this are purged (days)."
    )
    feedback_retention_days: float = Field(
        1095, description="Feedback older than this is purged (days)."
    )
    purge_interval_seconds: float = Field(
        3600, description="How often the service purges what is past retention (0: never)."
    )
    migrate_on_start: bool | None = Field(
        None,
        description="Run the store's migrations when the app starts (`cds-service serve` runs "
        "them once, before its workers). Default: only in try-it mode (authentication off); "
        "otherwise `cds-service store migrate` is a step of its own and the app refuses to "
        "start on a store that is missing or behind.",
    )
    review_ttl_hours: float = Field(
        24, description="How long a card's referral-review link opens the card (hours)."
    )
    smart_client_id: str | None = Field(
        None,
        description="The review page's SMART client id at the EHRs that launch it (App Launch "
        "2.x, public client with PKCE); none: a launch with iss and launch is refused.",
    )
    smart_issuers: list[str] = Field(
        [],
        description="FHIR base URLs (iss) that may launch the review page (JSON list), besides "
        "each trusted issuer's fhir_servers.",
    )
    smart_origins: list[str] = Field(
        [],
        description="Other origins the review page may call during a launch: the EHRs' "
        "authorization servers (their token endpoints), JSON list.",
    )
    rule_modes: dict[str, Mode] = Field(
        {},
        description='Per rule id, "active" or "silent" (JSON), over the rule files\' `mode`: a '
        "silent rule is evaluated and audited, its card not shown.",
    )
    admin_token: str | None = Field(
        None,
        description="Bearer token of the committee's read API and dashboard (/admin); none: "
        "they are not served. Never a CDS client's JWT.",
    )
    pseudonym_key: SecretStr | None = Field(
        None,
        description="Secret key of the pseudonyms (HMAC-SHA256) that link evaluations of one "
        "patient (the safety monitor) and of one clinician (feedback per clinician); the store "
        "never holds the ids. None: nothing is linked. A new key ends linkage with the old.",
    )
    safety_window_days: float = Field(
        90,
        gt=0,
        description="The safety monitor checks a patient's reassuring, order-removing and "
        "routine-referral cards of this many days before against the red flags found now.",
    )
    clinician_min_cell: int = Field(
        10,
        ge=1,
        description="Per clinician and rule, fewer cards than this show no numbers in the "
        "report's clinicians section and the per-clinician export.",
    )
    today: date | None = Field(
        None,
        description="Fixed evaluation date (YYYY-MM-DD) for demos and tests; default: today (UTC).",
    )

    @property
    def pages_on(self) -> bool:
        """The playground and interactive docs are served (try-it mode, or asked for)."""
        return self.auth_disabled if self.demo_pages is None else self.demo_pages

    @property
    def migrates_on_start(self) -> bool:
        """The app migrates the store when it starts (try-it mode, or asked for)."""
        return self.auth_disabled if self.migrate_on_start is None else self.migrate_on_start

    def pseudonyms(self) -> Pseudonyms | None:
        """The pseudonyms of the configured key (None: no linkage)."""
        key = self.pseudonym_key.get_secret_value() if self.pseudonym_key else ""
        return Pseudonyms(key.encode()) if key else None

    def issuers(self) -> dict[str, IssuerTrust]:
        """The trusted issuers, with the sandbox when opted in."""
        return {**self.trusted_issuers, **({SANDBOX: SANDBOX_TRUST} if self.trust_sandbox else {})}

    def review_issuers(self) -> list[str]:
        """The FHIR base URLs (iss) the review page accepts a SMART launch from."""
        trusted = [url for trust in self.issuers().values() for url in trust.fhir_servers]
        return list(dict.fromkeys([*self.smart_issuers, *trusted]))

    def review_origins(self) -> list[str]:
        """The origins the review page may connect to besides its own (CSP connect-src): the
        launching FHIR servers and the authorization servers."""
        return list(
            dict.fromkeys(_origin(url) for url in [*self.review_issuers(), *self.smart_origins])
        )

    def check_serving(self) -> None:
        """Refuse to serve with settings under which a request could choose what a token is good
        for: with authentication on and an issuer trusted, the JWT `aud` needs the configured
        public base URL (the request's Host or X-Forwarded-* headers never stand in for it)."""
        if not self.auth_disabled and self.issuers() and not self.public_base_url:
            raise UnsafeSettings(
                "CDS_PUBLIC_BASE_URL is not set: with trusted issuers (CDS_TRUSTED_ISSUERS or "
                "CDS_TRUST_SANDBOX) a token's aud is checked against it, never against the "
                "request's Host; set it to the URL clients call, e.g. https://cds.example.org"
            )


class UnsafeSettings(ValueError):
    """Settings the service refuses to start with; the message says what to set."""


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
