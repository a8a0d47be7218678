"""The delivery queue seam's backends, `sqlite/` (embedded) and `jetstream/` (scale-out), and the
contract both are checked by (`CheckedQueue`)."""

from stellwerk.storage.queue.contract import CheckedQueue, check_replay_cursor, check_route_cursor

__all__ = ["CheckedQueue", "check_replay_cursor", "check_route_cursor"]
