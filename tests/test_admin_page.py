"""The committee dashboard (/admin) in a real headless Chromium, against the real app on loopback.

The store is filled through the service's own HTTP API (CDS Hooks calls by two clinicians, then
feedback on some of the cards, and one patient seen again with a new metastatic cancer); the page
must show what GET /admin/report and /admin/safety answer, draw its four charts, and stay inside
its Content-Security-Policy.
"""

import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Locator, Page, expect

from tests.chromium import chromium
from tests.conftest import EXAMPLES, app_settings
from tests.loopback import serving

pytestmark = pytest.mark.slow

TOKEN = "test-admin-token"
SILENT_RULE = "physical-therapy-start-back"
# Examples with cards from a dozen rules, over the three hooks; each is posted POSTS times.
POSTS = {
    "red-flag-cauda-equina--retention-snomed-synthea": 2,
    "red-flag-cauda-equina--bilateral-sciatica": 1,
    "red-flag-malignancy--breast-cancer-snomed-synthea": 1,
    "imaging-supported-by-red-flag--order-select-mri-infection": 1,
    "imaging-acute-without-red-flag--ct-after-eight-weeks": 1,
    "neurology-radiculopathy--seven-weeks": 3,
    "orthopedic-spine-structural--scoliosis-six-months": 1,
    "pain-management-long-term-opioids--oxycodone-for-years": 2,
    "physical-therapy-chronic-untreated--exactly-twelve-weeks": 2,
    "primary-care-acute-nonspecific--two-weeks": 1,
    "physical-therapy-start-back--medium-risk": 2,  # silent: audited, never shown
}
# One patient seen twice: reassured first, then a new metastatic cancer (a possible miss).
FOLLOWED = (
    "primary-care-acute-nonspecific--two-weeks",
    "red-flag-metastatic-cord-compression--bone-metastases-without-deficit",
)
CLINICIANS = ("Practitioner/dr-a", "Practitioner/dr-b")
MIN_CELL = 2
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
CHARTS = ("chart-weeks", "chart-outcomes", "chart-reasons", "chart-silent")
RULE_COUNTS = ("cards", "silent_cards", "accepted", "overridden", "ignored")


def _feedback(card: dict[str, Any], index: int) -> dict[str, Any] | None:
    """Accepted, overridden (a coded reason; once a comment only) or no feedback (ignored)."""
    answered = datetime.now(UTC) + timedelta(minutes=1 + index % 5)  # a clinician's minutes
    stamp = answered.isoformat(timespec="seconds").replace("+00:00", "Z")
    answer: dict[str, Any] = {"card": card["uuid"], "outcomeTimestamp": stamp}
    if index % 3 == 0 and card.get("suggestions"):
        answer |= {
            "outcome": "accepted",
            "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}],
        }
    elif index % 3 == 1 and card.get("overrideReasons"):
        reasons = card["overrideReasons"]
        reason: dict[str, Any] = {"reason": reasons[index % len(reasons)]}
        if index == 7:
            reason = {"userComment": "Seen by the spinal team yesterday."}
        answer |= {"outcome": "overridden", "overrideReason": reason}
    else:
        return None
    return {"feedback": [answer]}


def _request(name: str, patient: str | None = None) -> dict[str, Any]:
    """An example request; with `patient`, about that patient instead."""
    request: dict[str, Any] = json.loads((EXAMPLES / f"{name}.json").read_text())
    if patient is None:
        return request
    text = json.dumps(request).replace(request["context"]["patientId"], patient)
    patient_request: dict[str, Any] = json.loads(text)
    return patient_request


def _populate(url: str) -> None:
    """CDS Hooks calls as an EHR makes them, then feedback on some of the cards shown."""
    shown = 0
    with httpx.Client(base_url=url, timeout=20) as client:
        for name in FOLLOWED:
            request = _request(name, patient="pt-seen-again")
            response = client.post(f"/cds-services/{request['hook']}", json=request)
            assert response.status_code == 200, response.text
        for name, times in POSTS.items():
            request = _request(name)
            for _ in range(times):
                request["hookInstance"] = str(uuid.uuid4())  # a new call each time
                request["context"]["userId"] = CLINICIANS[shown % 2]
                response = client.post(f"/cds-services/{request['hook']}", json=request)
                assert response.status_code == 200, response.text
                for card in response.json()["cards"]:
                    feedback = _feedback(card, shown)
                    shown += 1
                    if feedback is not None:
                        sent = client.post(
                            f"/cds-services/{request['hook']}/feedback", json=feedback
                        )
                        assert sent.status_code == 200, sent.text
    assert shown > 10


@pytest.fixture(scope="module")
def service() -> Iterator[str]:
    settings = app_settings(
        admin_token=TOKEN,
        rule_modes={SILENT_RULE: "silent"},
        pseudonym_key="dashboard-test-key",
        clinician_min_cell=MIN_CELL,
    )
    with serving(settings) as url:
        _populate(url)
        yield url


@pytest.fixture(scope="module")
def report(service: str) -> dict[str, Any]:
    response = httpx.get(
        f"{service}/admin/report", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    totals = body["totals"]
    # what the page is about to be checked against is worth checking: every kind of figure
    assert totals["evaluations"] == sum(POSTS.values()) + len(FOLLOWED)
    assert min(totals["cards"], totals["silent_cards"], totals["accepted"]) > 0
    assert totals["overridden"] > 0
    assert totals["ignored"] > 0
    assert body["override_reasons"]
    missed = [row["rule"] for row in body["safety"]["rules"] if row["possible_misses"]]
    assert missed == [FOLLOWED[0].split("--")[0]]
    rows = body["clinicians"]["rows"]
    assert {row["suppressed"] for row in rows} == {True, False}
    return body


@pytest.fixture(scope="module")
def cases(service: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{service}/admin/safety", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()
    assert len(found) == 1
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


def _watch(page: Page) -> list[str]:
    """Console errors and warnings (CSP violations are among them) and uncaught exceptions."""
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning") or "Content Security Policy" in message.text:
            problems.append(f"{message.type}: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(f"pageerror: {error}"))
    return problems


def _load(page: Page, service: str, token: str, since: str = "", until: str = "") -> None:
    response = page.goto(f"{service}/admin")
    assert response is not None
    assert response.status == 200
    assert "default-src 'self'" in response.headers["content-security-policy"]
    page.fill("#token", token)
    page.fill("#since", since)
    page.fill("#until", until)
    page.click("#load")


def _number(text: str) -> float:
    return float(text.replace(",", "").replace("%", "").strip())


def _check_decimal(cell: Locator, value: float | None, unit: str = "") -> None:
    """A rate (percent) or a mean shown with one decimal; a dash when there is none."""
    if value is None:
        expect(cell).to_have_text("—")
    else:
        expect(cell).to_have_text(re.compile(rf"^-?[\d,]+\.\d{re.escape(unit)}$"))
        assert _number(cell.inner_text()) == pytest.approx(value, abs=0.051)


def test_the_dashboard_shows_the_report(
    service: str,
    report: dict[str, Any],
    cases: list[dict[str, Any]],
    browser: Browser,
    tmp_path: Path,
) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    problems = _watch(page)
    _load(page, service, TOKEN)
    expect(page.locator("#status")).to_contain_text("Report loaded")
    expect(page.locator("#report")).to_be_visible()
    assert TOKEN not in page.url  # the token travels in a header only

    for field, value in report["totals"].items():
        tile = page.locator(f'#totals [data-field="{field}"]')
        expect(tile).to_have_text(f"{value:,}")
        expect(tile).to_have_attribute("data-value", str(value))

    rows = page.locator("#rules tbody tr")
    expect(rows).to_have_count(len(report["rules"]))
    for rule in report["rules"]:
        name = rule["rule"]
        cells = page.locator(f'#rules [data-rule="{name}"][data-field]')
        title = cells.and_(page.locator('[data-field="rule"]'))
        expect(title).to_have_text(rule["title"])  # by title, the id on hover
        expect(title).to_have_attribute("title", name)
        expect(cells.and_(page.locator('[data-field="mode"]'))).to_have_text(rule["mode"] or "—")
        for field in RULE_COUNTS:
            expect(cells.and_(page.locator(f'[data-field="{field}"]'))).to_have_text(
                f"{rule[field]:,}"
            )
        for field in ("acceptance_rate", "override_rate"):
            rate = rule[field]
            cell = cells.and_(page.locator(f'[data-field="{field}"]'))
            if field == "acceptance_rate" and rule["advice_only"]:
                expect(cell).to_have_text("advice only")  # nothing to accept: not ranked
                continue
            _check_decimal(cell, None if rate is None else rate * 100, " %")
        minutes = cells.and_(page.locator('[data-field="mean_minutes_to_feedback"]'))
        _check_decimal(minutes, rule["mean_minutes_to_feedback"])
    silent = page.locator(f'#rules [data-rule="{SILENT_RULE}"][data-field="mode"]')
    expect(silent).to_have_text("silent")

    for service_row in report["services"]:
        for field in ("evaluations", "cards", "silent_cards"):
            cell = page.locator(
                f'#services [data-service="{service_row["service"]}"][data-field="{field}"]'
            )
            expect(cell).to_have_text(f"{service_row[field]:,}")
    for indicator in report["indicators"]:
        for field in ("cards", "accepted", "overridden", "ignored"):
            cell = page.locator(
                f'#indicators [data-indicator="{indicator["indicator"]}"][data-field="{field}"]'
            )
            expect(cell).to_have_text(f"{indicator[field]:,}")

    expect(page.locator("#period")).to_have_text(
        re.compile(r"^Period: from the first evaluation up to now\.$")
    )
    _check_critical(page, report)
    _check_safety(page, report, cases)
    _check_clinicians(page, report)

    totals = report["totals"]
    reasons = sum(row["count"] for row in report["override_reasons"])
    for chart, expected in zip(
        CHARTS, (totals["cards"], totals["cards"], reasons, totals["silent_cards"]), strict=True
    ):
        canvas = page.locator(f"#{chart}")
        box = canvas.bounding_box()
        assert box is not None
        assert box["width"] > 200
        assert box["height"] > 150
        # what Chart.js drew: every figure of the report, once (evaluate runs outside the CSP)
        drawn = canvas.evaluate(
            "canvas => Chart.getChart(canvas).data.datasets"
            ".flatMap(set => set.data).reduce((sum, n) => sum + n, 0)"
        )
        assert drawn == expected, chart
    labels = page.locator("#chart-weeks").evaluate("canvas => Chart.getChart(canvas).data.labels")
    assert labels
    assert all(ISO_DATE.fullmatch(label) for label in labels)

    shot = tmp_path / "admin-dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
    print(f"admin dashboard screenshot: {shot}")
    assert problems == []
    page.close()


def _check_critical(page: Page, report: dict[str, Any]) -> None:
    """Critical cards overridden or ignored are called out, per rule, by title."""
    critical = [
        rule
        for rule in report["rules"]
        if rule["indicator"] == "critical" and rule["overridden"] + rule["ignored"]
    ]
    assert critical  # the fixture has some
    expect(page.locator("#critical")).to_be_visible()
    overridden = sum(rule["overridden"] for rule in critical)
    ignored = sum(rule["ignored"] for rule in critical)
    expect(page.locator("#critical-summary")).to_contain_text(f"{overridden} critical card")
    expect(page.locator("#critical-summary")).to_contain_text(f"and {ignored} left unanswered")
    expect(page.locator("#critical-rules li")).to_have_count(len(critical))
    for rule in critical:
        item = page.locator(f'#critical-rules li[data-rule="{rule["rule"]}"]')
        expect(item).to_contain_text(rule["title"])
        expect(item).to_contain_text(
            f"{rule['overridden']} overridden, {rule['ignored']} ignored of {rule['cards']} issued"
        )


def _check_safety(page: Page, report: dict[str, Any], cases: list[dict[str, Any]]) -> None:
    """The monitor's rows per rule and the case for review, with its evidence, no patient id."""
    for row in report["safety"]["rules"]:
        cells = page.locator(f'#safety [data-rule="{row["rule"]}"]')
        expect(cells.locator("th")).to_have_text(row["title"])
        expect(cells.locator('[data-field="possible_misses"]')).to_have_text(
            str(row["possible_misses"])
        )
        expect(cells.locator('[data-field="miss_rate"]')).to_have_text(
            f"{row['miss_rate'] * 100:.1f} % of {row['followed_up']}"
        )
    (case,) = cases
    row = page.locator(f'#safety-cases tr[data-card="{case["card"]}"]')
    expect(row.locator('[data-field="card"]')).to_contain_text(case["summary"])
    expect(row.locator('[data-field="red_flag"]')).to_have_text(case["red_flag_title"])
    expect(row.locator('[data-field="card_date"]')).to_have_text(ISO_DATE)
    expect(row.locator('[data-field="evidence"]')).to_contain_text("(ICD-10-CM C79.51)")
    expect(page.locator("#safety-cases")).not_to_contain_text("pt-seen-again")


def _check_clinicians(page: Page, report: dict[str, Any]) -> None:
    """Per pseudonym and rule, the numbers, or `< MIN_CELL` when there are too few cards."""
    rows = report["clinicians"]["rows"]
    expect(page.locator("#clinicians tbody tr")).to_have_count(len(rows))
    for row in rows:
        tr = page.locator(
            f'#clinicians tr[data-clinician="{row["clinician"]}"][data-rule="{row["rule"]}"]'
        )
        expect(tr.locator("th")).to_have_attribute("title", row["clinician"])
        cards = tr.locator('[data-field="cards"]')
        if row["suppressed"]:
            expect(cards).to_have_text(f"< {MIN_CELL}")
            expect(tr.locator('[data-field="accepted"]')).to_have_text("—")
        else:
            expect(cards).to_have_text(str(row["cards"]))
            expect(tr.locator('[data-field="overridden"]')).to_have_text(str(row["overridden"]))
    for clinician in CLINICIANS:
        expect(page.locator("#clinicians")).not_to_contain_text(clinician)


def test_a_wrong_token_is_refused_and_forgotten(service: str, browser: Browser) -> None:
    page = browser.new_page()
    _load(page, service, "not-the-admin-token")
    expect(page.locator("#status")).to_have_text(
        re.compile("the admin token was refused", re.IGNORECASE)
    )
    expect(page.locator("#report")).to_be_hidden()
    assert page.evaluate("() => Object.keys(sessionStorage).length") == 0
    assert "not-the-admin-token" not in page.url
    page.close()


def test_a_period_without_evaluations_says_so(service: str, browser: Browser) -> None:
    page = browser.new_page()
    problems = _watch(page)
    _load(page, service, TOKEN, since="2000-01-01", until="2000-02-01")
    expect(page.locator("#status")).to_contain_text(
        re.compile("no evaluations in this period", re.IGNORECASE)
    )
    expect(page.locator("#report")).to_be_hidden()
    assert page.url.endswith("/admin?since=2000-01-01&until=2000-02-01")  # the period, no token
    assert problems == []
    page.close()


def test_the_token_stays_for_the_session_only(service: str, browser: Browser) -> None:
    context = browser.new_context()
    page = context.new_page()
    _load(page, service, TOKEN)
    expect(page.locator("#status")).to_contain_text("Report loaded")
    page.reload()  # sessionStorage survives a reload: the report comes back by itself
    expect(page.locator("#status")).to_contain_text("Report loaded")
    assert page.evaluate("() => Object.keys(localStorage).length") == 0
    assert context.cookies() == []
    context.close()
    fresh = browser.new_page()  # a new session knows no token
    fresh.goto(f"{service}/admin")
    expect(fresh.locator("#token")).to_have_value("")
    fresh.close()
