"""Alembic migrations, run programmatically (no alembic.ini needed): `monitor db upgrade`."""
