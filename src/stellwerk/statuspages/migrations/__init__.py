"""Alembic migrations of the status pages\x27 tables (run by `stellwerk.capability.Database`)."""
