"""Names users give to resources (tenants, buses, rules, archives), and the one rule they follow."""

from __future__ import annotations

import re

NAME_RULE = "[A-Za-z0-9._-]{1,64}"
_NAME = re.compile(rf"^{NAME_RULE}\Z")


class InvalidNameError(ValueError):
    """A resource name breaks NAME_RULE."""

    def __init__(self, kind: str, value: str) -> None:
        self.kind = kind
        self.value = value
        shown = value if len(value) <= 80 else value[:77] + "..."
        super().__init__(f"{kind} name {shown!r} must match {NAME_RULE}")


def check_name(kind: str, value: str) -> str:
    if not _NAME.match(value):
        raise InvalidNameError(kind, value)
    return value
