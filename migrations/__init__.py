"""Alembic migrations for the Tollgate SQL store (run them with ``tollgate db upgrade``)."""
