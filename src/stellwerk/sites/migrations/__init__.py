"""Alembic migrations of the sites capability's tables (run by `stellwerk.capability.Database`)."""
