"""Migrating is a step of its own: concurrent migrators serialise, and every command that reads
the store refuses in one line (never a traceback, never an empty database left behind) when the
store is missing or behind."""

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient

from cds_service.app import create_app
from cds_service.storage import MIGRATION_LOCK, Store, StoreNotReady, _alembic_config
from tests.conftest import app_settings
from tests.test_cli import ENV, run

SCRIPTS = ScriptDirectory.from_config(_alembic_config())
HEAD = str(SCRIPTS.get_current_head())


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The refusal: exit 2, one line on stderr, nothing on stdout."""
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("cds-service: ")
    return line


@pytest.mark.slow  # the CLI as a subprocess
@pytest.mark.parametrize("command", [("report",), ("store", "purge")])
def test_reading_a_missing_store_says_so_and_creates_nothing(
    command: tuple[str, ...], tmp_path: Path
) -> None:
    store = tmp_path / "never-made.db"
    result = run(*command, env={**ENV, "CDS_DATABASE_URL": f"sqlite:///{store}"})
    line = _one_line(result)
    assert f"no store at {store}" in line
    assert "cds-service store migrate" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # the CLI as a subprocess
def test_reading_an_unmigrated_store_says_so(tmp_path: Path) -> None:
    store = tmp_path / "empty.db"
    sa.create_engine(f"sqlite:///{store}").connect().close()  # a database without the schema
    line = _one_line(run("report", env={**ENV, "CDS_DATABASE_URL": f"sqlite:///{store}"}))
    assert f"has schema none, this version needs {HEAD}" in line
    assert line.endswith("run `cds-service store migrate`")


@pytest.mark.slow  # the CLI as a subprocess
def test_serve_in_production_refuses_a_store_it_was_not_told_to_migrate(tmp_path: Path) -> None:
    env = {
        **ENV,
        "CDS_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}",
        "CDS_LOG_LEVEL": "error",
    }
    env.pop("CDS_AUTH_DISABLED", None)  # production: authentication on, nothing migrates itself
    line = _one_line(run("serve", "--port", "1", env=env))
    assert "cds-service store migrate" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # the CLI as a subprocess
def test_migrate_then_report_on_the_migrated_store(tmp_path: Path) -> None:
    env = {**ENV, "CDS_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}"}
    first, again = run("store", "migrate", env=env), run("store", "migrate", env=env)
    assert first.stdout.endswith(f"migrated from empty to schema {HEAD}\n"), first.stderr
    assert again.stdout.endswith(f"already at schema {HEAD}\n")
    assert run("report", "--format", "json", env=env).returncode == 0


def test_the_app_refuses_to_start_on_a_store_behind_and_says_what_to_run(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with pytest.raises(StoreNotReady, match=r"^no store at .*`cds-service store migrate`"):
        create_app(app_settings(database_url=url, migrate_on_start=False))
    assert not (tmp_path / "store.db").exists()
    previous = SCRIPTS.get_revision(HEAD).down_revision
    config = _alembic_config()
    with Store(url, migrate=False).engine.begin() as connection:  # the last version's schema
        config.attributes["connection"] = connection
        command.upgrade(config, str(previous))
    behind = rf"has schema {previous}, this version needs {HEAD}: run `cds-service store migrate`"
    with pytest.raises(StoreNotReady, match=behind):
        create_app(app_settings(database_url=url, migrate_on_start=False))
    Store(url).migrate()  # as `cds-service store migrate` does
    with TestClient(create_app(app_settings(database_url=url, migrate_on_start=False))) as client:
        assert client.get("/ready").status_code == 200


def test_try_it_mode_migrates_and_production_does_not_by_default() -> None:
    assert app_settings(migrate_on_start=None).migrates_on_start  # auth off: try-it
    assert not app_settings(migrate_on_start=None, auth_disabled=False).migrates_on_start


@pytest.fixture
def fresh_database(postgres_url: str) -> Iterator[str]:
    """An empty database of its own on the test PostgreSQL server."""
    server = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with server.connect() as connection:
        connection.execute(sa.text("DROP DATABASE IF EXISTS migrate_race"))
        connection.execute(sa.text("CREATE DATABASE migrate_race"))
    yield postgres_url.rsplit("/", 1)[0] + "/migrate_race"
    with server.connect() as connection:
        connection.execute(sa.text("DROP DATABASE migrate_race WITH (FORCE)"))
    server.dispose()


def _waiting_for_the_lock(engine: sa.Engine) -> int:
    query = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    with engine.connect() as connection:
        return int(connection.execute(sa.text(query)).scalar_one())


@pytest.mark.slow  # a real PostgreSQL server and two CLI subprocesses
def test_two_migrators_started_together_migrate_once(fresh_database: str) -> None:
    engine = sa.create_engine(fresh_database)
    env = {**ENV, "CDS_DATABASE_URL": fresh_database}
    command = [sys.executable, "-m", "cds_service", "store", "migrate"]
    with engine.connect() as holder:  # hold the lock so both migrators are started and waiting
        holder.execute(sa.select(sa.func.pg_advisory_lock(MIGRATION_LOCK)))
        migrators = [
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(2)
        ]
        deadline = time.monotonic() + 120
        while _waiting_for_the_lock(engine) < 2:
            assert all(m.poll() is None for m in migrators), "a migrator did not wait its turn"
            assert time.monotonic() < deadline, "the migrators never reached the lock"
            time.sleep(0.1)
        holder.execute(sa.select(sa.func.pg_advisory_unlock(MIGRATION_LOCK)))
    outputs = [m.communicate(timeout=120) for m in migrators]
    assert [m.returncode for m in migrators] == [0, 0], outputs
    said = sorted(out.decode().split(": ", 1)[1] for out, _ in outputs)
    assert said == [f"already at schema {HEAD}\n", f"migrated from empty to schema {HEAD}\n"]
    with engine.connect() as connection:
        versions = connection.execute(sa.text("SELECT version_num FROM alembic_version")).all()
    assert [tuple(row) for row in versions] == [(HEAD,)]
    engine.dispose()


@pytest.mark.slow  # a real PostgreSQL server and the CLI as a subprocess
def test_report_on_postgresql_missing_or_unmigrated_says_so(
    fresh_database: str, postgres_url: str
) -> None:
    missing = postgres_url.rsplit("/", 1)[0] + "/no_such_database"
    line = _one_line(run("report", env={**ENV, "CDS_DATABASE_URL": missing}))
    assert line.startswith("cds-service: cannot open the store at postgresql+psycopg://")
    assert "no_such_database" in line
    line = _one_line(run("report", env={**ENV, "CDS_DATABASE_URL": fresh_database}))
    assert f"has schema none, this version needs {HEAD}" in line
    engine = sa.create_engine(fresh_database)
    with engine.connect() as connection:  # and nothing was created
        assert not sa.inspect(connection).get_table_names()
    engine.dispose()
