"""Ingest adapters: how events arrive over HTTP and become CloudEvents for the log."""
