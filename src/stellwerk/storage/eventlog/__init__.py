"""The event log seam's backends, `sqlite/` (embedded) and `jetstream/` (scale-out), and the
contract both are checked by (`CheckedEventLog`)."""

from stellwerk.storage.eventlog.contract import CheckedEventLog, check_limit

__all__ = ["CheckedEventLog", "check_limit"]
