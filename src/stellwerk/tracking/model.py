"""Sources as the API shows them, and as the collector holds one it resolved from a write key."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Final, Literal
from urllib.parse import urlsplit

import msgspec

from stellwerk.names import Name
from stellwerk.refs import TenantRef
from stellwerk.service import ValidationFailed
from stellwerk.urls import ORIGIN_PATTERN

Kind = Literal["segment", "snowplow", "browser"]
WithoutConsent = Literal["drop", "anonymous"]

MAX_SOURCES_PER_TENANT: Final = 200
MAX_ORIGINS: Final = 50
MAX_ORIGIN_LENGTH: Final = 256
MAX_PSEUDONYMISED: Final = 32
ANY_ORIGIN: Final = "*"
_PATH_RULE: Final = r"[A-Za-z0-9_$-]{1,64}(\.[A-Za-z0-9_$-]{1,64}){0,7}"
_PATH: Final = re.compile(rf"^{_PATH_RULE}\Z")
# The rules `checked_input` applies, for the API's document (decoding leaves them to it).
_ORIGIN: Final = msgspec.Meta(
    extra_json_schema={
        "anyOf": [{"const": ANY_ORIGIN}, {"pattern": ORIGIN_PATTERN}],
        "maxLength": MAX_ORIGIN_LENGTH,
    }
)
_PSEUDONYMISED: Final = msgspec.Meta(extra_json_schema={"pattern": f"^{_PATH_RULE}$"})
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


class SourceInput(msgspec.Struct, forbid_unknown_fields=True):
    """The body of `PUT /v1/sources/{name}`.

    `kind`: which protocol its trackers speak. `bus`: where its events go. `allowed_origins`:
    the web origins (`https://shop.example`, or `*`) whose pages may send to it from a browser;
    none means server-side senders only. `without_consent`: what becomes of an event that lacks
    consent, `drop` it or keep it `anonymous`. `full_ip`: keep the sender's whole IP address
    instead of anonymising it. `pseudonymise`: dotted paths into the payload
    (`traits.email`) whose values are replaced by a keyed hash. `consent_purposes`: the
    purposes an event must be consented for to be kept as it came (none: every event is).
    `internal_hosts`: hosts that count as the shop's own for the referrer class (a payment
    provider's return page). `tcf_purposes`: purpose names a TCF v2 string grants, each by the
    TCF purposes it needs (none: the defaults of `consent.DEFAULT_TCF_PURPOSES`).
    """

    kind: Kind
    bus: Name = "default"
    allowed_origins: Annotated[
        list[Annotated[str, _ORIGIN]], msgspec.Meta(extra_json_schema={"maxItems": MAX_ORIGINS})
    ] = msgspec.field(default_factory=list)
    without_consent: WithoutConsent = "drop"
    full_ip: bool = False
    pseudonymise: Annotated[
        list[Annotated[str, _PSEUDONYMISED]],
        msgspec.Meta(extra_json_schema={"maxItems": MAX_PSEUDONYMISED}),
    ] = msgspec.field(default_factory=list)
    consent_purposes: list[str] = msgspec.field(default_factory=list)
    internal_hosts: list[str] = msgspec.field(default_factory=list)
    tcf_purposes: dict[str, list[int]] = msgspec.field(default_factory=dict)


class Source(msgspec.Struct, omit_defaults=True):
    """A source. `write_key` is shown once, in the answer that created it, and is not stored."""

    name: str
    kind: Kind
    bus: str
    write_key_id: str
    allowed_origins: list[str]
    without_consent: WithoutConsent
    full_ip: bool
    pseudonymise: list[str]
    created_at: datetime
    updated_at: datetime
    consent_purposes: list[str] = msgspec.field(default_factory=list)
    internal_hosts: list[str] = msgspec.field(default_factory=list)
    tcf_purposes: dict[str, list[int]] = msgspec.field(default_factory=dict)
    write_key: str | msgspec.UnsetType = msgspec.UNSET


class SourceList(msgspec.Struct):
    sources: list[Source]


@dataclass(frozen=True, slots=True)
class Binding:
    """A source as the collector needs it, resolved from a write key: whose it is, where its
    events go, and how they are to be treated."""

    tenant: TenantRef
    name: str
    kind: Kind
    bus: str
    key_digest: str
    allowed_origins: frozenset[str]
    without_consent: WithoutConsent
    full_ip: bool
    pseudonymise: tuple[str, ...]
    consent_purposes: tuple[str, ...] = ()
    internal_hosts: tuple[str, ...] = ()
    # (name, TCF purposes) pairs, sorted; empty: the defaults. A tuple keeps Binding hashable.
    tcf_purposes: tuple[tuple[str, tuple[int, ...]], ...] = ()

    @property
    def source(self) -> str:
        """The CloudEvents `source` of its events: the same for every event of the source, so
        that an SDK's retry of a `messageId` is recognised as a duplicate."""
        return f"/sources/{self.name}"

    def allows_origin(self, origin: str) -> bool:
        return ANY_ORIGIN in self.allowed_origins or origin in self.allowed_origins


def checked_origin(origin: str, field: str) -> str:
    """A web origin as browsers send it (`scheme://host[:port]`, default port left out), or 422
    naming `field`."""
    if origin == ANY_ORIGIN:
        return origin
    problem = None
    if len(origin) > MAX_ORIGIN_LENGTH:
        problem = f"is longer than {MAX_ORIGIN_LENGTH} characters"
    else:
        try:
            parts = urlsplit(origin)
            port = parts.port
        except ValueError as exc:
            parts, port, problem = None, None, f"is not an origin ({exc})"
        if parts is not None:
            if parts.scheme not in _DEFAULT_PORTS:
                problem = "must start with http:// or https://"
            elif not parts.hostname or parts.username is not None or parts.password is not None:
                problem = "must name a host (and no user)"
            elif parts.path not in ("", "/") or parts.query or parts.fragment:
                problem = "must be scheme://host[:port], without a path, query or fragment"
            else:
                shown = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
                default = port is None or port == _DEFAULT_PORTS[parts.scheme]
                return f"{parts.scheme}://{shown}" + ("" if default else f":{port}")
    raise ValidationFailed(
        f"allowed origin {origin[:80]!r} {problem} (such as https://shop.example, or *)",
        field=field,
    )


def checked_input(body: SourceInput) -> SourceInput:
    """`body` with its origins normalised, or 422 naming the first bad field."""
    if len(body.allowed_origins) > MAX_ORIGINS:
        raise ValidationFailed(
            f"a source allows at most {MAX_ORIGINS} origins", field="$.allowed_origins"
        )
    origins = sorted(
        {checked_origin(o, f"$.allowed_origins[{i}]") for i, o in enumerate(body.allowed_origins)}
    )
    if len(body.pseudonymise) > MAX_PSEUDONYMISED:
        raise ValidationFailed(
            f"a source pseudonymises at most {MAX_PSEUDONYMISED} fields", field="$.pseudonymise"
        )
    for i, path in enumerate(body.pseudonymise):
        if not _PATH.match(path):
            raise ValidationFailed(
                f"pseudonymise path {path[:80]!r} must be dotted field names "
                "(such as traits.email; letters, digits, _ $ -; at most 8 levels)",
                field=f"$.pseudonymise[{i}]",
            )
    return msgspec.structs.replace(
        body,
        allowed_origins=origins,
        pseudonymise=sorted(set(body.pseudonymise)),
        **checked_consent_settings(body),
    )


# Purpose names as a source or a destination names them: what can be a key of the stored
# consent (`data.context.stellwerk.consent.purposes.<name>`) and be required by an event
# pattern. A dot would be read as a path step by the pattern language, so none is allowed.
PURPOSE: Final = re.compile(r"^[a-z0-9_:-]{1,64}\Z")
MAX_CONSENT_PURPOSES: Final = 16
MAX_INTERNAL_HOSTS: Final = 32
MAX_TCF_PURPOSE_NAMES: Final = 16
_HOST: Final = re.compile(
    r"^(?=.{1,253}\Z)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\Z"
)


def checked_purposes(names: list[str], field: str, limit: int = MAX_CONSENT_PURPOSES) -> list[str]:
    """Purpose names, sorted and without repeats, or 422 naming the first bad one."""
    if len(names) > limit:
        raise ValidationFailed(f"at most {limit} purposes", field=field)
    for i, name in enumerate(names):
        if not PURPOSE.match(name):
            raise ValidationFailed(
                f"purpose {name[:80]!r} must be 1-64 lower-case letters, digits, _ : - "
                "(such as analytics, or tcf:1)",
                field=f"{field}[{i}]",
            )
    return sorted(set(names))


def checked_consent_settings(body: SourceInput) -> dict[str, object]:
    """A source's consent and referrer settings, normalised, or 422 naming the bad field."""
    purposes = checked_purposes(body.consent_purposes, "$.consent_purposes")
    if len(body.internal_hosts) > MAX_INTERNAL_HOSTS:
        raise ValidationFailed(
            f"a source lists at most {MAX_INTERNAL_HOSTS} internal hosts", field="$.internal_hosts"
        )
    hosts = []
    for i, host in enumerate(body.internal_hosts):
        bare = host.strip().lower().rstrip(".")
        if not _HOST.match(bare):
            raise ValidationFailed(
                f"internal host {host[:80]!r} must be a host name (such as pay.example)",
                field=f"$.internal_hosts[{i}]",
            )
        hosts.append(bare)
    if len(body.tcf_purposes) > MAX_TCF_PURPOSE_NAMES:
        raise ValidationFailed(
            f"a source names at most {MAX_TCF_PURPOSE_NAMES} TCF purposes", field="$.tcf_purposes"
        )
    tcf: dict[str, list[int]] = {}
    for name, numbers in body.tcf_purposes.items():
        if not PURPOSE.match(name):
            raise ValidationFailed(
                f"purpose {name[:80]!r} must be 1-64 lower-case letters, digits, _ : -",
                field=f"$.tcf_purposes.{name[:80]}",
            )
        bad = [n for n in numbers if not 1 <= n <= 24]
        if not numbers or bad:
            raise ValidationFailed(
                f"purpose {name!r} needs one or more TCF purposes, each 1..24",
                field=f"$.tcf_purposes.{name}",
            )
        tcf[name] = sorted(set(numbers))
    return {"consent_purposes": purposes, "internal_hosts": sorted(set(hosts)), "tcf_purposes": tcf}
