"""Alembic migrations of the tracking tables (run by `stellwerk.capability.Database`)."""
