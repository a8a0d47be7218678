"""The delivery queue seam's backends: `sqlite/` (embedded) and `jetstream/` (scale-out)."""
