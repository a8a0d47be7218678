"""The event log seam's backends: `sqlite/` (embedded) and `jetstream/` (scale-out)."""
