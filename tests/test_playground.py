"""The playground page in a real headless Chromium, against the real service on loopback."""

import shutil
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.conftest import ROOT
from tests.test_server import running_service

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = ROOT / "build" / "screenshots"
# As the machine notes advise: no sandbox as root, no background network in a closed network.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("playground")
    with running_service(folder, f"sqlite:///{folder / 'db.sqlite'}") as (url, _):
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield launched
        launched.close()


def test_playground_renders_a_critical_card(service: str, browser: Browser) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{service}/playground")
    page.select_option("#example", "red-flag-cauda-equina--retention-snomed-synthea")
    page.wait_for_function("document.getElementById('body').value.includes('267064002')")
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
    page.wait_for_function("document.getElementById('status').textContent.includes('HTTP 400')")
    assert "context.patientId" in page.locator("#status").inner_text()
    assert page.locator(".card").count() == 0
    page.close()


def test_unknown_example_is_404(service: str, browser: Browser) -> None:
    page = browser.new_page()
    response = page.goto(f"{service}/playground/examples/..%2Fpyproject")
    assert response is not None
    assert response.status == 404
    page.close()
