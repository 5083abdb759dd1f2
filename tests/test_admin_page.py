"""The committee dashboard (/admin) in a real headless Chromium, against the real app on loopback.

The store is filled through the service's own HTTP API (CDS Hooks calls, then feedback on some of
the cards); the page must show what GET /admin/report answers, draw its four charts, and stay
inside its Content-Security-Policy.
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


def _populate(url: str) -> None:
    """CDS Hooks calls as an EHR makes them, then feedback on some of the cards shown."""
    shown = 0
    with httpx.Client(base_url=url, timeout=20) as client:
        for name, times in POSTS.items():
            request = json.loads((EXAMPLES / f"{name}.json").read_text())
            for _ in range(times):
                request["hookInstance"] = str(uuid.uuid4())  # a new call each time
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
    settings = app_settings(admin_token=TOKEN, rule_modes={SILENT_RULE: "silent"})
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
    assert totals["evaluations"] == sum(POSTS.values())
    assert min(totals["cards"], totals["silent_cards"], totals["accepted"]) > 0
    assert totals["overridden"] > 0
    assert totals["ignored"] > 0
    assert body["override_reasons"]
    return body


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
    service: str, report: dict[str, Any], browser: Browser, tmp_path: Path
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
        expect(cells.and_(page.locator('[data-field="rule"]'))).to_have_text(name)
        expect(cells.and_(page.locator('[data-field="mode"]'))).to_have_text(rule["mode"] or "—")
        for field in RULE_COUNTS:
            expect(cells.and_(page.locator(f'[data-field="{field}"]'))).to_have_text(
                f"{rule[field]:,}"
            )
        for field in ("acceptance_rate", "override_rate"):
            rate = rule[field]
            cell = cells.and_(page.locator(f'[data-field="{field}"]'))
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

    shot = tmp_path / "admin-dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
    print(f"admin dashboard screenshot: {shot}")
    assert problems == []
    page.close()


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
