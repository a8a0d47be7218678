"""EventBridge's input transformer: InputPath, InputPathsMap and InputTemplate.

A template is checked when the rule is saved. Placeholders ``<name>`` take the quoting EventBridge
applies: inside a JSON string the value is inserted as text (JSON-escaped, strings without their
quotes); outside strings it is inserted as a JSON value. A variable whose path is not in the event
becomes ``null`` outside strings and nothing inside them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from stellwerk.clock import utc_now
from stellwerk.transform.errors import InvalidTransformerError
from stellwerk.transform.paths import Step, is_missing, parse_path, resolve

MAX_VARIABLES = 100
MAX_TEMPLATE_CHARS = 8192
BUILTINS = frozenset(
    {
        "stellwerk.rule-name",
        "stellwerk.event",
        "stellwerk.event.json",
        "stellwerk.ingestion-time",
    }
)
_NAME = re.compile(r"[A-Za-z0-9_-]+")
_PLACEHOLDER = re.compile(r"<([A-Za-z0-9_.\-]+)>")


@dataclass(frozen=True, slots=True)
class _Piece:
    """A run of template text followed by an optional placeholder."""

    text: str
    name: str | None
    quoted: bool
    key: bool = False  # inside a string that is an object key


def _scan_template(template: str) -> list[_Piece]:
    """Split the template at placeholders, noting whether each sits inside a JSON string."""
    pieces: list[_Piece] = []
    quoted = False
    start = 0
    index = 0
    while index < len(template):
        char = template[index]
        if char == "\\" and quoted:
            index += 2
            continue
        if char == '"':
            quoted = not quoted
        elif char == "<":
            found = _PLACEHOLDER.match(template, index)
            if found:
                key = quoted and _string_is_key(template, found.end())
                pieces.append(_Piece(template[start:index], found.group(1), quoted, key))
                start = index = found.end()
                continue
        index += 1
    pieces.append(_Piece(template[start:], None, quoted))
    return pieces


def _string_is_key(template: str, index: int) -> bool:
    """Whether the JSON string that contains position ``index`` is followed by ':'."""
    while index < len(template):
        char = template[index]
        if char == "\\":
            index += 2
            continue
        if char == '"':
            return template[index + 1 :].lstrip().startswith(":")
        index += 1
    return False


def _check_json_template(pieces: list[_Piece]) -> None:
    sample = "".join(
        piece.text + ("" if piece.name is None else ("x" if piece.quoted else "null"))
        for piece in pieces
    )
    try:
        msgspec.json.decode(sample)
    except msgspec.DecodeError as error:
        raise InvalidTransformerError(
            f"input_template looks like JSON but is not valid JSON: {error}", "input_template"
        ) from None
    for piece in pieces:
        if piece.key:
            raise InvalidTransformerError(
                f"input_template: placeholder <{piece.name}> cannot be an object key",
                "input_template",
            )


class InputTransformer:
    """A target's input transformation, validated when the rule is saved."""

    __slots__ = ("_input_path", "_paths", "_pieces", "input_path", "input_paths", "input_template")

    def __init__(
        self,
        input_paths: Mapping[str, str] | None = None,
        input_template: str | None = None,
        input_path: str | None = None,
    ) -> None:
        self.input_paths = dict(input_paths or {})
        self.input_template = input_template
        self.input_path = input_path
        if input_path is not None and (input_paths or input_template is not None):
            raise InvalidTransformerError(
                "input_path cannot be combined with input_paths or input_template", "input_path"
            )
        self._input_path = None if input_path is None else parse_path(input_path, "input_path")
        if input_paths and input_template is None:
            raise InvalidTransformerError(
                "input_paths needs an input_template to use them", "input_template"
            )
        if len(self.input_paths) > MAX_VARIABLES:
            raise InvalidTransformerError(
                f"input_paths has {len(self.input_paths)} variables; the limit is {MAX_VARIABLES}",
                "input_paths",
            )
        self._paths: dict[str, tuple[Step, ...]] = {}
        for name, path in self.input_paths.items():
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                raise InvalidTransformerError(
                    f"input_paths: variable name {name!r} must be letters, digits, '_' or '-'",
                    "input_paths",
                )
            self._paths[name] = parse_path(path, f"input_paths.{name}")
        self._pieces: list[_Piece] | None = None
        if input_template is not None:
            self._pieces = self._compile_template(input_template)

    def _compile_template(self, template: str) -> list[_Piece]:
        if not isinstance(template, str):
            raise InvalidTransformerError("input_template must be a string", "input_template")
        if len(template) > MAX_TEMPLATE_CHARS:
            raise InvalidTransformerError(
                f"input_template is {len(template)} characters; the limit is {MAX_TEMPLATE_CHARS}",
                "input_template",
            )
        pieces = _scan_template(template)
        for piece in pieces:
            known = piece.name in self._paths or piece.name in BUILTINS
            if piece.name is not None and not known:
                raise InvalidTransformerError(
                    f"input_template uses <{piece.name}>, which input_paths does not define",
                    "input_template",
                )
        if template.lstrip()[:1] in ("{", "["):
            _check_json_template(pieces)
        return pieces

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> InputTransformer:
        """From the rule body's ``input_transformer`` object."""
        unknown = set(spec) - {"input_paths", "input_template", "input_path"}
        if unknown:
            raise InvalidTransformerError(
                f"input_transformer has unknown keys: {', '.join(sorted(unknown))}"
            )
        paths = spec.get("input_paths")
        if paths is not None and not isinstance(paths, Mapping):
            raise InvalidTransformerError("input_paths must be an object", "input_paths")
        return cls(paths, spec.get("input_template"), spec.get("input_path"))

    def apply(
        self,
        event: Mapping[str, Any],
        *,
        rule_name: str = "",
        ingestion_time: datetime | str | None = None,
    ) -> str:
        """The text the target receives for this event."""
        if self._input_path is not None:
            selected = resolve(event, self._input_path)
            return "null" if is_missing(selected) else msgspec.json.encode(selected).decode()
        if self._pieces is None:
            return msgspec.json.encode(event).decode()
        values = self._values(event, rule_name, ingestion_time)
        out: list[str] = []
        for piece in self._pieces:
            out.append(piece.text)
            if piece.name is not None:
                out.append(_render(values.get(piece.name), piece.quoted))
        return "".join(out)

    def _values(
        self, event: Mapping[str, Any], rule_name: str, ingestion_time: datetime | str | None
    ) -> dict[str, Any]:
        if isinstance(ingestion_time, datetime):
            when = ingestion_time.astimezone(UTC).isoformat().replace("+00:00", "Z")
        else:
            when = ingestion_time or utc_now().isoformat().replace("+00:00", "Z")
        values: dict[str, Any] = {
            "stellwerk.rule-name": rule_name,
            "stellwerk.event": event,
            "stellwerk.event.json": msgspec.json.encode(event).decode(),
            "stellwerk.ingestion-time": when,
        }
        for name, steps in self._paths.items():
            found = resolve(event, steps)
            values[name] = None if is_missing(found) else found
        return values


def _render(value: Any, quoted: bool) -> str:
    if not quoted:
        return msgspec.json.encode(value).decode()
    if value is None:
        return ""
    if isinstance(value, str):
        return msgspec.json.encode(value).decode()[1:-1]
    # A number or an object inside a string: its JSON text, escaped to stay inside the string.
    return msgspec.json.encode(msgspec.json.encode(value).decode()).decode()[1:-1]
