"""Alembic environment: migrations run on the connection the store hands over, against the
tables declared in `cds_service.storage` (the one schema source)."""

from alembic import context

from cds_service.storage import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
