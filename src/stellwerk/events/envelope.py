"""An event in EventBridge's envelope, as rules with `view: eventbridge` see it (rules made
through the EventBridge API, docs/eventbridge-api.md): the stored CloudEvent mapped field by field.

| envelope | from the CloudEvent |
|---|---|
| `version` | always `"0"` |
| `id`, `source` | `id`, `source` |
| `detail-type` | `type` |
| `account` | the tenant's name |
| `time` | `time`, else `recordedtime` |
| `region` | extension `awsregion` (the region PutEvents was signed for), else `"local"` |
| `resources` | extension `awsresources` (a JSON array kept as a string), else `[]` |
| `detail` | `data`; `{"data_base64": ...}` for binary data; `{}` without data |

Other attributes (`subject`, `datacontenttype`, extensions) have no place in the envelope.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

RESOURCES_EXTENSION: Final = "awsresources"
REGION_EXTENSION: Final = "awsregion"
DEFAULT_REGION: Final = "local"

_encoder: Final = msgspec.json.Encoder()


def eventbridge_envelope(event: dict[str, Any], account: str) -> dict[str, Any]:
    """The envelope of a decoded stored CloudEvent of tenant `account`."""
    if "data" in event:
        detail = event["data"]
    elif "data_base64" in event:
        detail = {"data_base64": event["data_base64"]}
    else:
        detail = {}
    return {
        "version": "0",
        "id": event.get("id"),
        "detail-type": event.get("type"),
        "source": event.get("source"),
        "account": account,
        "time": event.get("time") or event.get("recordedtime"),
        "region": event.get(REGION_EXTENSION) or DEFAULT_REGION,
        "resources": _resources(event.get(RESOURCES_EXTENSION)),
        "detail": detail,
    }


def encoded_envelope(body: bytes, account: str) -> tuple[bytes, dict[str, Any]]:
    """The envelope of a stored CloudEvent's JSON `body`, as JSON and as its value."""
    envelope = eventbridge_envelope(msgspec.json.decode(body), account)
    return _encoder.encode(envelope), envelope


def _resources(text: object) -> list[str]:
    if not isinstance(text, str):
        return []
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return []
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    return []
