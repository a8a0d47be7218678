"""Stellwerk: a self-hosted event platform that sets the routes events take."""

__version__ = "0.1.0"
