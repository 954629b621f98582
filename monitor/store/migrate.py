"""Schema upgrades with alembic, driven from code so `pip install` users need no alembic.ini."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

_DIR = Path(__file__).resolve().parent / "migrations"
# Any constant will do: it only has to be the same for every worker sharing one PostgreSQL.
_PG_LOCK_KEY = 0x6D6F6E69746F72


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_DIR))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Bring the schema to `revision`; returns (before, after). Safe to call from several workers at once."""
    cfg = alembic_config()
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Workers starting together must not run the same migration twice.
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        before = MigrationContext.configure(conn).get_current_revision()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
        after = MigrationContext.configure(conn).get_current_revision()
    return before, after


def ensure_schema(engine: Engine) -> None:
    """Upgrade when the database is behind; cheap when it is current."""
    if current_revision(engine) != head_revision():
        upgrade(engine)
