"""Hostile input over HTTP: the real service on loopback, on SQLite and on PostgreSQL, answers a
few hundred hostile requests (bench/hostile.py) without a 5xx, every error an OperationOutcome."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from bench.hostile import KINDS, Report, cases, format_report, run_sync
from tests.loopback import running_service

pytestmark = pytest.mark.slow  # the service runs as a uvicorn subprocess, twice

CASES = 250
"""Per backend: every kind at least once, most of their variants (10-15 s a backend)."""
SEED = 0
ADMIN_TOKEN = "hostile-admin-token"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hostile.db'}"
        return
    url: str = request.getfixturevalue("postgres_url")
    yield url
    engine = sa.create_engine(url)
    with engine.begin() as connection:  # a clean database for the next test
        connection.execute(
            sa.text(
                "DROP TABLE IF EXISTS possible_misses, follow_ups, feedback, cards, evaluations,"
                " jwt_ids, alembic_version"
            )
        )
    engine.dispose()


def _tracebacks(folder: Path) -> str:
    """The exceptions the service logged (its JSON log lines), for the failure message."""
    found: list[str] = []
    for log in folder.glob("server-*.log"):
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("{") and '"exception"' in line:
                exception = json.loads(line)["exception"].splitlines()
                found.append("\n".join(exception[-12:]))
    return "\n\n".join(found[:10])


def _explain(report: Report, url: str, folder: Path) -> str:
    return f"{format_report(report, url, SEED)}\n\nserver log:\n{_tracebacks(folder)}"


def test_hostile_requests_get_no_server_error(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CDS_ADMIN_TOKEN", ADMIN_TOKEN)  # the committee API's queries too
    with running_service(tmp_path, database_url) as (url, _):
        report = run_sync(url, cases(SEED, CASES), concurrency=4, admin_token=ADMIN_TOKEN)
    assert len(report.results) == CASES
    if report.failures:  # a 5xx, no answer, or an error that is not a JSON OperationOutcome
        pytest.fail(_explain(report, url, tmp_path), pytrace=False)
    by_kind = report.by_kind
    assert set(by_kind) == set(KINDS)  # every kind was sent
    assert set(by_kind["valid"]) == {"200"}  # the examples still work between hostile requests
    assert report.by_status["400"] > CASES / 3  # most were refused as the bad requests they are

    engine = sa.create_engine(database_url)  # and the evaluations went to this backend's store
    with engine.connect() as connection:
        audited = connection.execute(sa.text("SELECT count(*) FROM evaluations")).scalar_one()
    engine.dispose()
    assert audited >= sum(by_kind["valid"].values()) // 2
