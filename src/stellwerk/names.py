"""Names users give to resources (tenants, buses, rules, archives), and the one rule they follow."""

from __future__ import annotations

import re
from typing import Annotated

import msgspec

NAME_RULE = "[A-Za-z0-9._-]{1,64}"
_NAME = re.compile(rf"^{NAME_RULE}\Z")

# The rule as a type for the OpenAPI document, so that clients generated from it refuse what the
# server would. Only the document carries it (`extra_json_schema` is not checked on decoding):
# the server checks names with `check_name`, which answers 400 naming the field, as it always
# has. JSON Schema's `$` (ECMA-262) matches only at the very end, like `\Z` here.
NAME_PATTERN = f"^{NAME_RULE}$"
Name = Annotated[str, msgspec.Meta(extra_json_schema={"pattern": NAME_PATTERN})]


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
