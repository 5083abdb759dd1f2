"""The CDS Hooks sandbox itself, run in Chromium against the service on loopback.

The sandbox is cds-hooks/sandbox @ 3b7e255 (Apache-2.0), vendored as its git archive
(tests/sandbox/) and built with its own package-lock and webpack configuration by
`make sandbox`: the same React app as https://sandbox.cds-hooks.org, unmodified. It is opened
the way the README says (`?fhirServiceUrl=...&serviceDiscoveryURL=...`), on a loopback FHIR
server (tests/us_core_server.py, with a CapabilityStatement and POST `_search`) that holds one
record; it discovers the services, prefetches with its own code, calls each hook from its own
tabs, and renders the cards with its own card list. What it cannot reach here (its default
services and its FHIR servers on the internet) is refused by the browser. The service runs
as `make serve` runs it (try-it mode); the JWTs the sandbox signed are then checked with the
service's own verifier against the JWKS the sandbox publishes (from the same archive).
"""

import functools
import json
import tarfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlencode

import anyio
import httpx
import pytest
from playwright.sync_api import Browser, Page, Request, Response, expect

from cds_service.auth import Authenticator
from cds_service.settings import SANDBOX, SANDBOX_TRUST
from tests.chromium import chromium
from tests.conftest import ROOT, load_example
from tests.fhir_server import FhirServer
from tests.loopback import running_service
from tests.us_core_server import Record, us_core_server

pytestmark = pytest.mark.slow  # Chromium, the sandbox's 5 MB bundle and the service as a process

ARCHIVE = ROOT / "tests" / "sandbox" / "cds-hooks-sandbox-3b7e255.tar.gz"
APP = ROOT / "tests" / "sandbox" / "build" / "cds-hooks-sandbox" / "build"
PATIENT = "pt-acute-mri"  # two weeks of low back pain, no red flag
REFERRED = "pt-radic"  # radiculopathy for seven weeks: a referral card, with its SMART link
RECORDS = [
    "imaging-acute-without-red-flag--order-select-mri",
    "neurology-radiculopathy--seven-weeks",
]
"""The examples whose patients the FHIR server holds."""
WAIT_MS = 60_000
"""How long to wait for the sandbox to render (a bound for a busy machine, not a measure)."""

ACUTE = "Acute low back pain, no red flag found in the coded record: primary care, no imaging"
IMAGING = (
    "Lumbar imaging is usually not appropriate for acute back pain with no red flag in the "
    "coded record"
)
RED_FLAG = "Possible cauda equina syndrome: emergency department and emergency MRI now"
NO_LAUNCH = "Cannot launch SMART link without a SMART-enabled FHIR server"  # the sandbox's words
CT_72133 = (
    "Computed tomography, lumbar spine; without contrast material, followed by contrast "
    "material(s) and further sections"
)


@dataclass
class Exchanges:
    """What the sandbox sent the service, and what it got back."""

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    """(service path, request body) of every hook call, in order."""
    tokens: list[tuple[str, str]] = field(default_factory=list)
    """(path, Authorization header) of every request to the service."""
    statuses: list[tuple[str, int]] = field(default_factory=list)

    def hooks(self) -> list[tuple[str, str]]:
        """(service, `hook` the body says) of every call."""
        return [(path.rsplit("/", 1)[1], body.get("hook", "")) for path, body in self.calls]


@pytest.fixture(scope="module")
def sandbox() -> Iterator[str]:
    """The built sandbox, served as static files on loopback (its origin)."""
    assert (APP / "app.bundle.js").is_file(), "the sandbox is not built: run `make sandbox`"
    handler = functools.partial(_QuietFiles, directory=str(APP))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def ehr() -> Iterator[FhirServer]:
    """The EHR's FHIR server: the patients' records, searched as US Core allows."""
    resources = []
    for name in RECORDS:
        request, _ = load_example(name)
        prefetch = request["prefetch"]
        resources += [prefetch["patient"]] + [
            entry["resource"]
            for key, bundle in prefetch.items()
            if key != "patient"
            for entry in bundle.get("entry", [])
        ]
    with us_core_server(Record(resources=resources)) as server:
        searches = server.answer
        assert searches is not None
        capabilities = {"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1"}

        def answer(path: str) -> tuple[int, Any]:
            # the sandbox checks /metadata, and that /Patient is not a 401, before using a server
            return (200, capabilities) if path == "metadata" else searches(path)

        server.answer = answer
        yield server


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, sandbox: str, ehr: FhirServer
) -> Iterator[str]:
    """The service as `make serve` runs it, its CORS open to the sandbox's origin."""
    folder = tmp_path_factory.mktemp("sandbox")
    settings = {
        "CDS_CORS_ORIGINS": json.dumps([sandbox]),
        "CDS_FHIR_SERVERS": json.dumps([ehr.base]),
    }
    with running_service(folder, f"sqlite:///{folder / 'db.sqlite'}", settings) as (url, _):
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@contextmanager
def opened(
    browser: Browser, sandbox: str, service: str, ehr: FhirServer, patient: str = PATIENT
) -> Iterator[tuple[Page, Exchanges]]:
    """The sandbox opened as the README says, recording its exchanges with the service."""
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    exchanges = Exchanges()

    def sent(request: Request) -> None:
        if request.url.startswith(service):
            path = request.url.removeprefix(service)
            exchanges.tokens.append((path, request.headers.get("authorization", "")))
            if request.method == "POST":
                exchanges.calls.append((path, json.loads(request.post_data or "{}")))

    def answered(response: Response) -> None:
        if response.url.startswith(service):
            exchanges.statuses.append((response.url.removeprefix(service), response.status))

    page.on("request", sent)
    page.on("response", answered)
    # Its default services and FHIR servers are on the internet, which is not reachable here.
    page.route(lambda url: not url.startswith("http://127.0.0.1:"), lambda route: route.abort())
    query = {
        "fhirServiceUrl": ehr.base,
        "patientId": patient,
        "serviceDiscoveryURL": f"{service}/cds-services",
    }
    page.goto(f"{sandbox}/?{urlencode(query)}")
    try:
        yield page, exchanges
    finally:
        context.close()


def _cards(page: Page) -> list[str]:
    """The summaries of the cards the sandbox shows, in its order (most urgent first)."""
    summaries = page.locator(".MuiCardContent-root > :first-child").all_inner_texts()
    return [summary.strip() for summary in summaries]


def _choose(page: Page, box: str, query: str, option: str) -> None:
    """Search one of the PAMA tab's boxes and pick an option, as a user does."""
    page.get_by_text(box, exact=True).click()
    page.keyboard.type(query)
    options = page.locator("[id^='react-select'][id*='-option-']")  # react-select's menu
    options.get_by_text(option, exact=True).click()


@contextmanager
def _feedback(page: Page) -> Iterator[None]:
    """The block's click sends feedback: wait until the service has answered it."""
    with page.expect_response(lambda response: response.url.endswith("/feedback")) as answer:
        yield
    assert answer.value.status == 200


def _all_answered(exchanges: Exchanges, service: str) -> None:
    """Every request was answered 200, and every JWT the sandbox signed passes the service's
    verifier, trusting the sandbox as CDS_TRUST_SANDBOX does (its JWKS from the archive: the
    document its site publishes at the token's `jku`)."""
    assert exchanges.statuses, "the sandbox called nothing"
    assert len(exchanges.statuses) == len(exchanges.tokens), "a request got no answer"
    assert all(status == 200 for _, status in exchanges.statuses), exchanges.statuses
    with tarfile.open(ARCHIVE) as archive:
        member = archive.extractfile("cds-hooks-sandbox/build/.well-known/jwks.json")
        assert member is not None
        jwks: dict[str, Any] = json.load(member)

    async def published(url: str) -> dict[str, Any]:
        assert url == f"{SANDBOX}/.well-known/jwks.json"
        return jwks

    verifier = Authenticator({SANDBOX: SANDBOX_TRUST}, 30, lambda *_: True, service, published)
    with ThreadPoolExecutor(1) as thread:  # Playwright's event loop runs in this one
        for path, authorization in exchanges.tokens:
            claims = thread.submit(anyio.run, verifier.verify, authorization, path).result()
            assert claims["aud"] == f"{service}{path}"


def test_patient_view_shows_the_card(
    browser: Browser, sandbox: str, service: str, ehr: FhirServer
) -> None:
    with opened(browser, sandbox, service, ehr) as (page, exchanges):
        expect(page.get_by_text(ACUTE, exact=True)).to_be_visible(timeout=WAIT_MS)
        assert _cards(page) == [ACUTE]
        with _feedback(page):
            page.get_by_role("button", name="Dismiss").click()  # outcome: overridden
        expect(page.get_by_text(ACUTE, exact=True)).to_have_count(0, timeout=WAIT_MS)
    assert exchanges.hooks() == [("patient-view", "patient-view"), ("feedback", "")]
    (_, call), (_, feedback) = exchanges.calls
    assert call["context"]["patientId"] == PATIENT
    assert call["fhirServer"] == ehr.base
    # the sandbox prefetched every key with its own code (POST _search): nothing left to fetch
    discovery = httpx.get(f"{service}/cds-services").json()["services"]
    (wanted,) = [s["prefetch"] for s in discovery if s["id"] == "patient-view"]
    assert set(call["prefetch"]) == set(wanted)
    assert feedback["feedback"][0]["outcome"] == "overridden"
    _all_answered(exchanges, service)


def test_pama_tab_judges_the_order_it_builds(
    browser: Browser, sandbox: str, service: str, ehr: FhirServer
) -> None:
    with opened(browser, sandbox, service, ehr) as (page, exchanges):
        expect(page.get_by_text(ACUTE, exact=True)).to_be_visible(timeout=WAIT_MS)
        page.get_by_role("button", name="PAMA Imaging").click()
        _choose(page, "Search orders", "72133", CT_72133)
        _choose(page, "Search reasons", "low back pain", "Low back pain (finding)")
        expect(page.get_by_text(IMAGING, exact=True)).to_be_visible(timeout=WAIT_MS)
        assert _cards(page) == [IMAGING, ACUTE]
        # the rating the service returned as a systemAction, in the tab's own box
        expect(page.get_by_text("PAMA Rating:")).to_have_text(
            "PAMA Rating: not-appropriate⚠", timeout=WAIT_MS
        )
        with _feedback(page):
            page.get_by_role("button", name=f"Remove the order: {CT_72133}").click()  # accepted
        _choose(page, "Search reasons", "cauda equina", "Cauda equina syndrome (disorder)")
        expect(page.get_by_text(RED_FLAG, exact=True)).to_be_visible(timeout=WAIT_MS)
        expect(page.get_by_text("PAMA Rating:")).to_have_text(
            "PAMA Rating: appropriate✓", timeout=WAIT_MS
        )
        shown = _cards(page)
    assert IMAGING not in shown, shown
    assert ACUTE not in shown, shown
    calls = [body for path, body in exchanges.calls if path.endswith("/order-select")]
    assert {body["hook"] for body in calls} == {"order-select"}
    last = calls[-1]["context"]
    assert last["selections"] == ["ServiceRequest/example-request-id"]
    (order,) = [entry["resource"] for entry in last["draftOrders"]["entry"]]
    assert [c["code"] for c in order["code"]["coding"]] == ["72133"]
    assert [r["coding"][0]["code"] for r in order["reasonCode"]] == ["279039007", "192970008"]
    feedback = [body["feedback"][0] for path, body in exchanges.calls if path.endswith("/feedback")]
    assert [f["outcome"] for f in feedback] == ["accepted"]
    _all_answered(exchanges, service)


def test_rx_tabs_send_order_select_and_order_sign(
    browser: Browser, sandbox: str, service: str, ehr: FhirServer
) -> None:
    with opened(browser, sandbox, service, ehr) as (page, exchanges):
        expect(page.get_by_text(ACUTE, exact=True)).to_be_visible(timeout=WAIT_MS)
        page.get_by_role("button", name="Rx View").click()
        expect(page.get_by_text(ACUTE, exact=True)).to_be_visible(timeout=WAIT_MS)
        assert _cards(page) == [ACUTE]
        page.get_by_role("button", name="Rx Sign").click()
        page.get_by_role("button", name="Sign Order").click()
        expect(page.get_by_text(ACUTE, exact=True)).to_be_visible(timeout=WAIT_MS)
        assert _cards(page) == [ACUTE]
    hooks = exchanges.hooks()
    assert ("order-select", "order-select") in hooks
    assert ("order-sign", "order-sign") in hooks
    (sign,) = [body for path, body in exchanges.calls if path.endswith("/order-sign")]
    (order,) = [entry["resource"] for entry in sign["context"]["draftOrders"]["entry"]]
    assert order["resourceType"] == "MedicationRequest"
    _all_answered(exchanges, service)


def test_a_referral_cards_smart_link_waits_for_a_launch_from_the_fhir_server(
    browser: Browser, sandbox: str, service: str, ehr: FhirServer
) -> None:
    """The sandbox asks its FHIR server to register a launch for a SMART link, with the card's
    appContext; a server without that endpoint (the loopback one) leaves the link disabled."""
    ehr.posted.clear()
    with opened(browser, sandbox, service, ehr, REFERRED) as (page, exchanges):
        link = page.get_by_role("button", name="Review the evidence and the draft referral")
        expect(link).to_be_disabled(timeout=WAIT_MS)
        expect(link).to_have_attribute("title", NO_LAUNCH)
        shown = _cards(page)
    (registration,) = [json.loads(body) for path, body in ehr.posted]
    assert ehr.posted[0][0] == "_services/smart/Launch"
    assert registration["launchUrl"] == f"{service}/review"
    parameters = registration["parameters"]
    assert parameters["patient"] == REFERRED
    # the appContext the sandbox would hand the review page opens the card it shows
    card = httpx.get(
        f"{service}/review/card", headers={"X-Card-Capability": parameters["appContext"]}
    )
    assert card.status_code == 200, card.text
    assert card.json()["summary"] in shown
    _all_answered(exchanges, service)
