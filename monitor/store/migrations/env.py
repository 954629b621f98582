from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import monitor.store.digest_models  # registers the digest tables
import monitor.store.evidence_models  # registers the article and evidence table
import monitor.store.models  # registers the tables
import monitor.store.notify_models  # the notification outbox
import monitor.store.workspace_models  # noqa: F401  (users, verdicts, notes, audit)

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things in place
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
