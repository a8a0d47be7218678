"""Delivery: events on their way to targets, with retries and dead letters."""
