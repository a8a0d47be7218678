"""Destinations as presets: one call makes a rule, with an HTTP target and an input
transformer, that forwards tracked events to GA4's Measurement Protocol, Meta's Conversions
API, or any service that takes Segment's HTTP API.

A preset is a rule like any other (the `Rules` facade saves it; the router and delivery run
it); what the preset adds is its pattern and its request shape. Consent is enforced by the
pattern: the collector stores each event's purposes as `data.context.stellwerk.consent.
purposes.<name>: true` (see `tracking.refine`), and the rule needs each of its destination's
purposes as one field of its pattern, so the router never matches an event that lacks one.
The fields of a pattern are ANDed; that is why purposes are stored as an object of booleans,
not a list (a list field matches when *any* element does).

The service's credential (GA4's `api_secret`, Meta's `access_token`, a Segment write key) goes
into a connection of its own, which seals it and never shows it again, not into the rule's URL
or template, which anyone who may read the bus's rules reads.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal
from urllib.parse import quote, urlsplit

import msgspec

from stellwerk.names import NAME_RULE
from stellwerk.rules import RuleInput, TargetSpec, TransformerSpec
from stellwerk.service import ValidationFailed
from stellwerk.tracking.model import PURPOSE
from stellwerk.tracking.refine import MEMBER

SEGMENT_TYPES: Final = ("track", "identify", "page", "screen", "group", "alias")
MAX_EVENTS: Final = 50
MAX_PURPOSES: Final = 8
_EVENT_NAME: Final = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,39}\Z")  # GA4's and Meta's rule
_RULE_NAME: Final = re.compile(rf"^{NAME_RULE}\Z")
_SOURCE: Final = re.compile(r"^[A-Za-z0-9._-]{1,64}\Z")

GA4_URL: Final = "https://www.google-analytics.com"
META_URL: Final = "https://graph.facebook.com"
META_API_VERSION: Final = "v21.0"
SEGMENT_URL: Final = "https://api.segment.io"
# How a preset's rule describes itself: a destination replaces only a rule that starts so.
DESCRIBED: Final = "tracking destination"

_Purposes = Annotated[list[str], msgspec.Meta(min_length=1, max_length=MAX_PURPOSES)]
_Events = Annotated[list[str], msgspec.Meta(min_length=1, max_length=MAX_EVENTS)]
_Secret = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,512}$")]


class _Common(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, tag_field="preset"):
    """Settings every preset has. `name`: the rule's name (default: the preset's). `source`:
    only that tracking source's events. `events`: only these `track` event names. `bots`:
    forward events whose user agent is a bot's too. `base_url`: the service's address (tests
    and proxies set it). `timeout_seconds`: as any HTTP target's."""

    name: str | None = None
    source: str | None = None
    events: _Events | None = None
    bots: bool = False
    base_url: str | None = None
    timeout_seconds: float = 5.0


class Ga4(_Common, tag="ga4"):
    """GA4's Measurement Protocol: `measurement_id` (G-...) and `api_secret` of a web stream.
    `event_name`: the GA4 name to send instead of the Segment event's own (with `events`,
    one Segment event becomes one GA4 event, `purchase` say)."""

    measurement_id: Annotated[str, msgspec.Meta(pattern=r"^G-[A-Z0-9]{4,20}$")]
    api_secret: _Secret
    purposes: _Purposes = msgspec.field(default_factory=lambda: ["analytics"])
    event_name: str | None = None


class Meta(_Common, tag="meta"):
    """Meta's Conversions API: `pixel_id` and a system user's `access_token`.
    `action_source` as Meta defines it; `test_event_code` routes events to the Events
    Manager's test tab; `event_name` as for GA4 (`Purchase`)."""

    pixel_id: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{5,20}$")]
    access_token: _Secret
    purposes: _Purposes = msgspec.field(default_factory=lambda: ["advertising"])
    event_name: str | None = None
    action_source: Literal[
        "website", "app", "email", "phone_call", "chat", "physical_store", "system_generated"
    ] = "website"
    api_version: Annotated[str, msgspec.Meta(pattern=r"^v[0-9]{1,3}\.[0-9]{1,3}$")] = (
        META_API_VERSION
    )
    test_event_code: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")] | None = None


class Segment(_Common, tag="segment"):
    """A Segment-format HTTP forward: each message, as stored, in a `POST /v1/batch` with the
    receiving service's `write_key` (Segment, RudderStack, another Stellwerk). `types`: which
    Segment calls to forward."""

    write_key: _Secret
    purposes: _Purposes = msgspec.field(default_factory=lambda: ["analytics"])
    types: list[Literal["track", "identify", "page", "screen", "group", "alias"]] = msgspec.field(
        default_factory=lambda: list(SEGMENT_TYPES)
    )


DestinationInput = Ga4 | Meta | Segment


@dataclass(frozen=True)
class Destination:
    """What a preset makes: rule `name` on its bus, and connection `connection_name` holding
    the service's credential (`connection`, a body for the connections facade)."""

    name: str
    rule: RuleInput
    connection_name: str
    connection: dict[str, str]

    def same_kind(self, shown: dict[str, Any]) -> bool:
        """Whether a saved connection (as `GET` shows it, without its secret) is one this
        destination may replace: of the same type and naming the same parameter or header."""
        mine = {k: v for k, v in self.connection.items() if k != "value"}
        return all(shown.get(k) == v for k, v in mine.items())


def destination_of(bus: str, body: DestinationInput) -> Destination:
    """The rule and connection a preset makes; 422 naming the field of a bad setting."""
    _check(body)
    name = body.name or _tag(body)
    connection_name = connection_name_of(bus, name)
    if isinstance(body, Ga4):
        url, target = _ga4(body)
        connection = _query_key("api_secret", body.api_secret)
        types: list[str] = ["segment.track"]
    elif isinstance(body, Meta):
        url, target = _meta(body)
        connection = _query_key("access_token", body.access_token)
        types = ["segment.track"]
    else:
        url, target = _segment(body)
        # Segment's HTTP API takes the write key as the Basic user, with no password.
        basic = base64.b64encode(f"{body.write_key}:".encode()).decode("ascii")
        connection = {"type": "api_key", "header": "Authorization", "value": f"Basic {basic}"}
        types = [f"segment.{t}" for t in sorted(set(body.types))]
    spec = TargetSpec(
        id=_tag(body),
        type="http",
        url=url,
        connection=connection_name,
        input_transformer=target,
        timeout_seconds=body.timeout_seconds,
    )
    description = f"{DESCRIBED} ({_tag(body)}), needs {', '.join(body.purposes)}"
    rule = RuleInput(pattern=pattern_of(body, types), targets=[spec], description=description[:256])
    return Destination(name, rule, connection_name, connection)


def connection_name_of(bus: str, rule: str) -> str:
    """`tracking.<bus>.<rule>`, or, when that is longer than a name may be, `tracking.` and a
    digest of both."""
    name = f"tracking.{bus}.{rule}"
    if len(name) <= 64:
        return name
    return "tracking." + hashlib.sha256(f"{bus}/{rule}".encode()).hexdigest()[:32]


def _query_key(parameter: str, value: str) -> dict[str, str]:
    return {"type": "api_key_query", "parameter": parameter, "value": value}


def pattern_of(body: DestinationInput, types: list[str]) -> dict[str, Any]:
    """Its events, and only those consented for every one of its purposes (one field each, so
    the pattern ANDs them)."""
    stellwerk: dict[str, Any] = {
        "consent": {"purposes": {p: [True] for p in sorted(set(body.purposes))}}
    }
    if not body.bots:
        stellwerk["user_agent"] = {"bot": [False]}
    data: dict[str, Any] = {"context": {MEMBER: stellwerk}}
    if body.events is not None:
        data["event"] = sorted(set(body.events))
    pattern: dict[str, Any] = {"type": types, "data": data}
    if body.source is not None:
        pattern["source"] = [f"/sources/{body.source}"]
    return pattern


def _tag(body: DestinationInput) -> str:
    return "ga4" if isinstance(body, Ga4) else "meta" if isinstance(body, Meta) else "segment"


def _check(body: DestinationInput) -> None:
    if body.name is not None and not _RULE_NAME.match(body.name):
        raise ValidationFailed(f"name must be a rule's name, {NAME_RULE}", field="$.name")
    for i, purpose in enumerate(body.purposes):
        if not PURPOSE.match(purpose):
            raise ValidationFailed(
                f"purpose {purpose[:80]!r} must be 1-64 lower-case letters, digits, _ : - "
                "(such as analytics, or tcf:1)",
                field=f"$.purposes[{i}]",
            )
    if body.source is not None and not _SOURCE.match(body.source):
        raise ValidationFailed("source must be a source's name", field="$.source")
    for i, event in enumerate(body.events or ()):
        if not event or len(event) > 256:
            raise ValidationFailed("an event name is 1-256 characters", field=f"$.events[{i}]")
    named = body.event_name if isinstance(body, Ga4 | Meta) else None
    if named is not None and not _EVENT_NAME.match(named):
        raise ValidationFailed(
            "event_name must start with a letter and be at most 40 letters, digits or _",
            field="$.event_name",
        )
    if body.base_url is not None:
        parts = urlsplit(body.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValidationFailed(
                "base_url must be an http(s) URL such as https://www.google-analytics.com",
                field="$.base_url",
            )
        if parts.query or parts.fragment:
            raise ValidationFailed("base_url takes no query or fragment", field="$.base_url")
    if not 0 < body.timeout_seconds <= 60:
        raise ValidationFailed("timeout_seconds must be in (0, 60]", field="$.timeout_seconds")


def _base(body: DestinationInput, default: str) -> str:
    return (body.base_url or default).rstrip("/")


def _json_text(value: str) -> str:
    """A literal for a template: JSON text, where `<` and `>` are escaped so that the
    transformer never reads part of it as a placeholder."""
    return msgspec.json.encode(value).decode().replace("<", "\\u003c").replace(">", "\\u003e")


_STELLWERK = f"$.data.context.{MEMBER}"


def _name_of(event_name: str | None) -> tuple[dict[str, str], str]:
    if event_name is None:
        return {"name": "$.data.event"}, '"<name>"'
    return {}, _json_text(event_name)


def _ga4(body: Ga4) -> tuple[str, TransformerSpec]:
    """`POST /mp/collect?measurement_id=&api_secret=` with `{"client_id", "user_id",
    "events": [{"name", "params"}]}`: the Segment event's properties as the params. The
    connection adds `api_secret`."""
    query = f"measurement_id={quote(body.measurement_id)}"
    paths, name = _name_of(body.event_name)
    paths |= {
        "client_id": "$.data.anonymousId",
        "user_id": "$.data.userId",
        "params": "$.data.properties",
    }
    template = (
        '{"client_id": "<client_id>", "user_id": "<user_id>", '
        f'"events": [{{"name": {name}, "params": <params>}}]}}'
    )
    url = f"{_base(body, GA4_URL)}/mp/collect?{query}"
    return url, TransformerSpec(input_paths=paths, input_template=template)


def _meta(body: Meta) -> tuple[str, TransformerSpec]:
    """`POST /{version}/{pixel_id}/events?access_token=` with `{"data": [{"event_name",
    "event_time", "event_id", "action_source", "event_source_url", "user_data" (hashed ids,
    the collector's), "custom_data"}]}`; `event_id` is the message id, so Meta deduplicates
    it against the browser pixel's event of the same id. The connection adds `access_token`."""
    paths, name = _name_of(body.event_name)
    paths |= {
        "event_time": f"{_STELLWERK}.event_time",
        "event_id": "$.id",
        "url": "$.data.context.page.url",
        "user_data": f"{_STELLWERK}.user_data",
        "custom_data": "$.data.properties",
    }
    test = "" if body.test_event_code is None else f', "test_event_code": "{body.test_event_code}"'
    template = (
        f'{{"data": [{{"event_name": {name}, "event_time": <event_time>, '
        f'"event_id": "<event_id>", "action_source": "{body.action_source}", '
        '"event_source_url": "<url>", "user_data": <user_data>, '
        f'"custom_data": <custom_data>}}]{test}}}'
    )
    url = f"{_base(body, META_URL)}/{body.api_version}/{body.pixel_id}/events"
    return url, TransformerSpec(input_paths=paths, input_template=template)


def _segment(body: Segment) -> tuple[str, TransformerSpec]:
    """`POST /v1/batch` with `{"batch": [message]}`; the connection adds the write key as the
    Basic user, as Segment's HTTP API takes it."""
    template = '{"batch": [<message>]}'
    url = f"{_base(body, SEGMENT_URL)}/v1/batch"
    return url, TransformerSpec(input_paths={"message": "$.data"}, input_template=template)
