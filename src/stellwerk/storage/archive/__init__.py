"""The archive store seam's backends: `sqlite/` (embedded) and `jetstream/` (scale-out)."""
