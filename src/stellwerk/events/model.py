"""The CloudEvents 1.0 envelope as Stellwerk holds it, and its one JSON encoding.

Attributes keep the exact values the producer sent (`time` stays the producer's string), so the
event a router matches and a target receives is the event that came in. Extensions are a flat
mapping beside the context attributes, as in the CloudEvents JSON format.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

SPECVERSION: Final = "1.0"

# Extensions Stellwerk sets on every stored event; a producer's values for them are discarded.
REPLAY_NAME: Final = "replayname"
"""The extension a replayed event carries: the replay's name."""
OWNED_EXTENSIONS: Final = frozenset({"tenant", "bus", "recordedtime", REPLAY_NAME})

ExtensionValue = str | int | bool


class CloudEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One validated CloudEvents 1.0 event (see `validate_event`).

    `data` is `msgspec.UNSET` when the event carries no data or carries `data_base64`; a JSON
    `null` in `data` is read as no data, as the JSON format allows for absent members.
    """

    id: str
    source: str
    type: str
    specversion: str = SPECVERSION
    time: str | None = None
    subject: str | None = None
    datacontenttype: str | None = None
    dataschema: str | None = None
    data: Any = msgspec.UNSET
    data_base64: str | None = None
    extensions: dict[str, ExtensionValue] = msgspec.field(default_factory=dict)

    def to_json_object(self) -> dict[str, Any]:
        """The event as the CloudEvents JSON format object, extensions at the top level."""
        obj: dict[str, Any] = {
            "specversion": self.specversion,
            "id": self.id,
            "source": self.source,
            "type": self.type,
        }
        if self.subject is not None:
            obj["subject"] = self.subject
        if self.time is not None:
            obj["time"] = self.time
        if self.datacontenttype is not None:
            obj["datacontenttype"] = self.datacontenttype
        if self.dataschema is not None:
            obj["dataschema"] = self.dataschema
        obj.update(self.extensions)
        if self.data is not msgspec.UNSET:
            obj["data"] = self.data
        elif self.data_base64 is not None:
            obj["data_base64"] = self.data_base64
        return obj


_encoder: Final = msgspec.json.Encoder()


def encode_event(event: CloudEvent) -> bytes:
    """Encode an event in the CloudEvents JSON format: compact UTF-8, one object, no padding.

    The result starts with `{` and ends with `}` with nothing around them; the event log relies on
    that to add Stellwerk's extensions without decoding the event again.
    """
    return _encoder.encode(event.to_json_object())
