"""Shared fixtures: the real knowledge base, the triage, the app, and the example requests."""

import json
import os
import tempfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import settings as hypothesis_settings

from cds_service import examples
from cds_service.app import create_app
from cds_service.knowledge import Knowledge, load_knowledge
from cds_service.settings import Settings
from cds_service.triage import Triage
from tests.postgres import postgres_server

# In CI, property tests replay the same examples every run (a new finding comes from a local run,
# not from a red CI); locally they explore anew each time.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "fhir_examples"


def _anchor() -> date:
    anchor = examples.anchor(EXAMPLES)
    assert anchor is not None, f"{EXAMPLES / examples.ANCHOR_FILE} is missing"
    return anchor


EXAMPLE_TODAY = _anchor()
"""The date the example files are written relative to: loaded for it, they are as written."""


def app_settings(**overrides: Any) -> Settings:
    """Settings for a test app: the examples' date, a fresh SQLite file, no fetching."""
    database = Path(tempfile.mkdtemp(prefix="spine-cds-")) / "test.db"
    values: dict[str, Any] = {
        "today": EXAMPLE_TODAY,
        "database_url": f"sqlite:///{database}",
        "fhir_servers": [],  # tests never leave loopback
        "auth_disabled": True,  # tests/test_auth.py turns it on
        "migrate_on_start": True,  # a fresh store (tests/test_store_ready.py checks the refusal)
    }
    return Settings(**(values | overrides))


def example_names() -> list[str]:
    return sorted(path.stem for path in EXAMPLES.glob("*.json"))


def load_example(name: str, today: date = EXAMPLE_TODAY) -> tuple[dict[str, Any], dict[str, Any]]:
    """An example request rebased to `today` (as written, by default) and its expectation."""
    request = examples.load(EXAMPLES / f"{name}.json", today)
    expected = json.loads((EXAMPLES / "expected" / f"{name}.json").read_text())
    return request, expected


@pytest.fixture(scope="session")
def knowledge() -> Knowledge:
    return load_knowledge()


@pytest.fixture(scope="session")
def triage(knowledge: Knowledge) -> Triage:
    return Triage(knowledge)


@pytest.fixture(scope="session")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(app_settings())) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """One real PostgreSQL server for the whole run (tests drop their tables afterwards)."""
    with postgres_server() as url:
        yield url


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """With `-m "not slow"`, a module marked slow as a whole is not even imported: some build
    their cases at import (schemathesis), and deselecting them after collection costs seconds."""
    if config.getoption("markexpr", "") != "not slow" or collection_path.suffix != ".py":
        return None
    return "\npytestmark = pytest.mark.slow" in collection_path.read_text() or None
