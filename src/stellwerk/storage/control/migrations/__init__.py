"""Alembic migrations of the control plane (run by `stellwerk.storage.control.migrate`)."""
