"""The archive store seam's backends, `sqlite/` (embedded) and `jetstream/` (scale-out), and the
contract both are checked by (`CheckedArchiveStore`)."""

from stellwerk.storage.archive.contract import CheckedArchiveStore, check_archive_cursor

__all__ = ["CheckedArchiveStore", "check_archive_cursor"]
