"""The tables declared in `storage.py` are the schema: the migrations must build exactly them."""

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from cds_service.storage import Store, metadata


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def migrated(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[sa.Engine]:
    """A database upgraded to head by the migrations alone."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('schema') / 'store.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    store = Store(url)
    yield store.engine
    metadata.drop_all(store.engine)
    with store.engine.begin() as connection:
        connection.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))
    store.engine.dispose()


def test_migrations_build_the_declared_schema(migrated: sa.Engine) -> None:
    with migrated.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
    assert differences == []


def test_a_schema_change_without_a_migration_is_caught(migrated: sa.Engine) -> None:
    drifted = sa.MetaData()
    for table in metadata.tables.values():
        table.to_metadata(drifted)
    sa.Table("cards", drifted, sa.Column("reviewed_by", sa.String(64)), extend_existing=True)
    with migrated.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), drifted)
    assert [diff[0] for diff in differences] == ["add_column"]
