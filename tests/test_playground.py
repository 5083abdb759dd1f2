"""The playground page in a real headless Chromium, against the real service on loopback."""

import re
from collections.abc import Iterator
from urllib.parse import urlencode

import httpx
import pytest
from markdown_it import MarkdownIt
from playwright.sync_api import Browser, Route, expect

from cds_service.models import HookRequest, dump
from cds_service.triage import Triage
from tests.chromium import chromium
from tests.conftest import EXAMPLE_TODAY, ROOT, load_example
from tests.loopback import running_service

pytestmark = pytest.mark.slow  # Chromium through Playwright, and the service as a subprocess

SCREENSHOTS = ROOT / "build" / "screenshots"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("playground")
    with running_service(folder, f"sqlite:///{folder / 'db.sqlite'}") as (url, _):
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


def test_playground_renders_a_critical_card(service: str, browser: Browser) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{service}/playground")
    page.select_option("#example", "red-flag-cauda-equina--retention-snomed-synthea")
    expect(page.locator("#body")).to_have_value(re.compile("267064002"))
    page.click("#send")
    card = page.locator(".card.critical")
    card.wait_for()
    assert "cauda equina" in card.locator(".summary").inner_text().lower()
    assert "267064002" in card.locator(".detail").inner_text()
    assert "NUCC 207P00000X" in card.locator(".service-request").inner_text()
    assert card.locator(".source a").get_attribute("href", timeout=1000)
    assert "HTTP 200" in page.locator("#status").inner_text()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / "playground-critical-card.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    page.close()


def test_playground_shows_errors_with_their_path(service: str, browser: Browser) -> None:
    page = browser.new_page()
    page.goto(f"{service}/playground")
    page.fill("#body", '{"hook": "patient-view", "hookInstance": "x", "context": {}}')
    page.click("#send")
    expect(page.locator("#status")).to_contain_text("HTTP 400")
    assert "context.patientId" in page.locator("#status").inner_text()
    assert page.locator(".card").count() == 0
    page.close()


def test_unknown_example_is_404(service: str, browser: Browser) -> None:
    page = browser.new_page()
    response = page.goto(f"{service}/playground/examples/..%2Fpyproject")
    assert response is not None
    assert response.status == 404
    page.close()


def test_smart_link_opens_the_referral_review(service: str, browser: Browser) -> None:
    body = (ROOT / "fhir_examples" / "neurology-radiculopathy--seven-weeks.json").read_bytes()
    card = httpx.post(
        f"{service}/cds-services/patient-view",
        content=body,
        headers={"Content-Type": "application/json"},
        timeout=10,
    ).json()["cards"][0]
    (link,) = card["links"]
    assert link["type"] == "smart"
    assert link["url"] == f"{service}/review"
    assert link["appContext"].startswith(f"{card['uuid']}.")  # the card, and a secret
    # What the EHR does on a click, with appContext carried in the URL (see review.js).
    query = urlencode({"launch": "launch-123", "iss": "https://ehr.example.org/fhir"})
    page = browser.new_page(viewport={"width": 1100, "height": 1000})
    page.goto(f"{link['url']}?{query}&appContext={link['appContext']}")
    page.locator(".card.warning").wait_for()
    assert "https://ehr.example.org/fhir" in page.locator("#launch").inner_text()
    assert "M54.16" in page.locator(".detail").inner_text()
    assert '"308474002"' in page.locator(".suggestion pre").inner_text()  # the draft referral
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "referral-review.png"), full_page=True)
    page.goto(f"{link['url']}?{query}&appContext=not-a-card")
    # (a locator, not wait_for_function: the pages' CSP forbids the eval it would need)
    expect(page.locator("#status")).to_contain_text("404")
    page.close()


MARKUP = '<img src="http://127.0.0.1:9/pixel.png"><a href="http://evil.example">Low back pain</a>'
MARKUP_SHOWN = (
    '<img src="http[://]127[.]0[.]0[.]1[:]9/pixel[.]png"><a href="http[://]evil[.]example">'
    "Low back pain</a>"
)
"""As the card shows it: as text, and no URL in it that an autolinking renderer could link."""


def test_record_text_in_a_card_renders_as_text_in_a_markdown_html_renderer(
    browser: Browser, triage: Triage
) -> None:
    """As the CDS Hooks sandbox shows `detail`: CommonMark with raw HTML allowed (markdown-it).

    Markup goes into every record text a card echoes: a Condition's display, an Observation's
    display and unit, a medicine's free text and an entry's fullUrl (ids are FHIR ids, checked).
    """
    request, _ = load_example("red-flag-spinal-infection-suspected--tacrolimus-raised-crp")
    prefetch = request["prefetch"]
    condition = prefetch["conditions"]["entry"][0]["resource"]
    condition["code"]["coding"][0]["display"] = f"{MARKUP} **bold** [x](http://evil.example)"
    crp = prefetch["observations"]["entry"][0]["resource"]
    crp["code"]["coding"][0]["display"] = MARKUP
    crp["valueQuantity"]["unit"] = "<i>mg/L</i>"
    entry = prefetch["medications"]["entry"][0]
    entry["resource"].pop("id")
    entry["fullUrl"] = "urn:uuid:<img/src=x>"
    entry["resource"]["medicationCodeableConcept"]["text"] = f"{MARKUP} tacrolimus 1 mg"
    body = HookRequest.model_validate(request)
    (card,) = dump(triage.evaluate(body, "patient-view", EXAMPLE_TODAY))["cards"]
    html = MarkdownIt("commonmark", {"html": True}).render(card["detail"])
    page = browser.new_page()
    page.set_content(f"<html><body>{html}</body></html>")
    assert page.locator("img, a, i, b").count() == 0
    assert page.locator("strong", has_text="bold").count() == 0
    text = page.locator("body").inner_text()
    for shown in (
        MARKUP_SHOWN,
        "[x](http[://]evil[.]example)",
        "<i>mg/L</i>",
        "urn:uuid:<img/src=x>",
    ):
        assert shown in text
    page.close()


def test_api_docs_render_offline_within_the_pages_policy(service: str, browser: Browser) -> None:
    page = browser.new_page()
    outside: list[str] = []
    problems: list[str] = []

    def only_the_service(route: Route) -> None:
        if route.request.url.startswith(service):
            route.continue_()
        else:  # a CDN, say: the docs must not need it
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_service)
    page.on(
        "console",
        lambda message: problems.append(message.text) if message.type == "error" else None,
    )
    page.goto(f"{service}/docs")
    # Swagger UI parses 1.7 MB of script first: on a loaded machine that takes seconds.
    expect(
        page.locator(".opblock-summary-path", has_text="/cds-services/{service_id}/feedback")
    ).to_be_visible(timeout=30_000)
    assert (
        "default-src 'self'"
        in page.request.get(f"{service}/docs").headers["content-security-policy"]
    )
    assert outside == []
    assert problems == []
    page.close()
