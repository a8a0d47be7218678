"""Alembic migrations of the EventBridge API's tables (run by `stellwerk.capability.Database`)."""
