"""The review page launched as a SMART app (App Launch 2.x, EHR launch, PKCE) in Chromium.

The EHR is played by real parts on loopback: its authorization server is oauth2-mock-server
(npm, installed by `make oauth-server`; tests/smart/authorization_server.mjs gives each launch
its token response, as an EHR does), and its FHIR endpoint serves
`.well-known/smart-configuration` and the launch's Patient. The page runs the authorization with
the vendored fhirclient.
"""

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.chromium import chromium
from tests.conftest import ROOT
from tests.fhir_server import FhirServer, fhir_server
from tests.loopback import running_service
from tests.postgres import free_port

pytestmark = pytest.mark.slow  # Chromium, node and the service as processes

CLIENT_ID = "spine-cds-review"
SERVER_SCRIPT = ROOT / "tests" / "smart" / "authorization_server.mjs"


@dataclass
class Ehr:
    """The EHR's side of a launch: its FHIR base URL (`iss`), its authorization server and
    what that server knows about each `launch`."""

    fhir: FhirServer
    authorization: str
    launches: Path
    log: Path

    @property
    def iss(self) -> str:
        return self.fhir.base

    def register(self, launch: str, **context: Any) -> str:
        known = json.loads(self.launches.read_text())
        self.launches.write_text(json.dumps(known | {launch: context}))
        return launch

    def authorize_requests(self) -> list[dict[str, Any]]:
        lines = self.log.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]


@pytest.fixture(scope="module")
def ehr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ehr]:
    node = shutil.which("node")
    assert node, "node is missing: run `make oauth-server`"
    folder = tmp_path_factory.mktemp("ehr")
    launches, log = folder / "launches.json", folder / "authorization-server.log"
    launches.write_text("{}")
    port = free_port()
    authorization = f"http://127.0.0.1:{port}"
    with log.open("w") as output:
        server = subprocess.Popen(
            [node, str(SERVER_SCRIPT), str(port), str(launches)], stdout=output, stderr=output
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{authorization}/jwks", timeout=1).raise_for_status()
                break
            except httpx.HTTPError as exc:
                if time.monotonic() > deadline or server.poll() is not None:
                    started = f"the authorization server did not start: {log.read_text()}"
                    raise RuntimeError(started) from exc
                time.sleep(0.1)
        with fhir_server() as fhir:
            fhir.routes[".well-known/smart-configuration"] = (
                200,
                {
                    "authorization_endpoint": f"{authorization}/authorize",
                    "token_endpoint": f"{authorization}/token",
                    "grant_types_supported": ["authorization_code"],
                    "code_challenge_methods_supported": ["S256"],
                    "capabilities": ["launch-ehr", "client-public", "context-ehr-patient"],
                },
            )
            fhir.routes["Patient/pt-radic-7w"] = (
                200,
                {
                    "resourceType": "Patient",
                    "id": "pt-radic-7w",
                    "name": [{"given": ["Ada"], "family": "Lovelace"}],
                    "birthDate": "1980-03-02",
                },
            )
            yield Ehr(fhir, authorization, launches, log)
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, ehr: Ehr) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("smart")
    settings = {
        "CDS_SMART_CLIENT_ID": CLIENT_ID,
        "CDS_SMART_ISSUERS": json.dumps([ehr.iss]),
        "CDS_SMART_ORIGINS": json.dumps([ehr.authorization]),
    }
    with running_service(folder, f"sqlite:///{folder / 'db.sqlite'}", settings) as (url, _):
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


def _referral_link(service: str) -> dict[str, Any]:
    """The SMART link of a referral card the service just issued."""
    body = (ROOT / "fhir_examples" / "neurology-radiculopathy--seven-weeks.json").read_bytes()
    answer = httpx.post(
        f"{service}/cds-services/patient-view",
        content=body,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    (link,) = answer.json()["cards"][0]["links"]
    assert link["type"] == "smart"
    return dict(link)


def _launch(browser: Browser, link: dict[str, Any], iss: str, launch: str) -> Page:
    """What the EHR does when the clinician clicks the link: open it with `iss` and `launch`."""
    page = browser.new_page(viewport={"width": 1100, "height": 1000})
    page.goto(f"{link['url']}?{urlencode({'iss': iss, 'launch': launch})}")
    return page


def test_an_ehr_launch_through_the_authorization_server_shows_the_card(
    service: str, ehr: Ehr, browser: Browser
) -> None:
    link = _referral_link(service)
    launch = ehr.register(
        "launch-ok", token={"appContext": link["appContext"], "patient": "pt-radic-7w"}
    )
    page = _launch(browser, link, ehr.iss, launch)
    page.locator(".card.warning").wait_for()
    assert "M54.16" in page.locator(".detail").inner_text()  # the evidence
    assert '"308474002"' in page.locator(".suggestion pre").inner_text()  # the draft referral
    assert f"Launched by {ehr.iss}" in page.locator("#launch").inner_text()
    expect(page.locator("#patient")).to_have_text("Patient Ada Lovelace, born 1980-03-02")
    (read,) = [auth for path, auth in ehr.fhir.requests if path == "Patient/pt-radic-7w"]
    assert read is not None
    assert read.startswith("Bearer ")  # with the launch's access token
    assert "code=" not in page.url  # the code is not left in the address bar
    (authorized,) = [r for r in ehr.authorize_requests() if r["authorize"] == launch]
    assert authorized["code_challenge_method"] == "S256"  # PKCE
    page.close()


def test_the_review_page_may_connect_only_to_its_ehr_origins(service: str, ehr: Ehr) -> None:
    policy = httpx.get(f"{service}/review").headers["content-security-policy"]
    fhir_origin = ehr.iss.removesuffix("/fhir")
    assert f"connect-src 'self' {fhir_origin} {ehr.authorization}" in policy
    other = httpx.get(f"{service}/playground").headers["content-security-policy"]
    assert "connect-src" not in other


@pytest.mark.parametrize(
    ("context", "app_context", "message"),
    [
        ({"state": "not-this-launch"}, True, "its state is unknown"),
        ({"expired": True}, True, "refused the authorization code"),
        ({}, False, "carries no appContext"),
    ],
    ids=["wrong-state", "expired-code", "no-app-context"],
)
def test_a_failed_launch_says_why(
    service: str,
    ehr: Ehr,
    browser: Browser,
    context: dict[str, Any],
    app_context: bool,
    message: str,
) -> None:
    link = _referral_link(service)
    token = {"patient": "pt-radic-7w"} | ({"appContext": link["appContext"]} if app_context else {})
    launch = ehr.register(f"launch-{message}", token=token, **context)
    page = _launch(browser, link, ehr.iss, launch)
    expect(page.locator("#status")).to_contain_text(message)
    assert page.locator(".card").count() == 0
    page.close()


def test_a_launch_from_an_ehr_not_configured_is_refused(service: str, browser: Browser) -> None:
    link = _referral_link(service)
    page = _launch(browser, link, "https://ehr.elsewhere.example/fhir", "launch-1")
    expect(page.locator("#status")).to_contain_text(
        "not configured for the EHR at https://ehr.elsewhere.example/fhir"
    )
    assert page.url.startswith(service)  # never sent to the other EHR's authorization server
    page.close()
