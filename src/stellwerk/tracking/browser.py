"""The first-party browser tracker: the script `/t.js` (read once, gzipped once, its ETag
computed once, so serving it is a dictionary lookup) and the visitor cookie the collector sets.

The visitor id lives in a cookie the *collector* sets with `Set-Cookie` on the shop's own
domain, not in one the script writes: Safari caps cookies written by JavaScript at 7 days, a
server-set one lives as long as it says (browsers cap that at 400 days). The script never reads
it, so it is HttpOnly.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import uuid
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

from stellwerk.tracking.collector import Arrival
from stellwerk.tracking.consent import DEFAULT_TCF_PURPOSES, ConsentPolicy, consent_of, decide
from stellwerk.tracking.model import Binding
from stellwerk.tracking.refine import request_context

SCRIPT_PATH: Final = "/t.js"
COOKIE: Final = "stellwerk_vid"
COOKIE_MAX_AGE: Final = 400 * 24 * 3600  # the most a browser keeps a cookie (RFC 6265bis)
SCRIPT_MAX_AGE: Final = 3600  # an hour: a fixed tracker reaches every visitor within it
MAX_SCRIPT_GZIP: Final = 6 * 1024  # issue 17's budget for /t.js
_UUID: Final = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\Z")


@dataclass(frozen=True, slots=True)
class Script:
    """The tracker as served: plain and gzipped bodies and their shared strong ETag (the
    representations differ, so the gzipped one's tag is marked apart)."""

    plain: bytes
    gzipped: bytes
    etag: str

    @property
    def gzip_etag(self) -> str:
        return self.etag[:-1] + '-gz"'


def load_script() -> Script:
    """`static/t.js` from the package, gzipped at level 9 with a fixed mtime so that every
    process (and every restart) serves the same bytes under the same ETag."""
    plain = resources.files("stellwerk.tracking").joinpath("static/t.js").read_bytes()
    gzipped = gzip.compress(plain, compresslevel=9, mtime=0)
    etag = '"' + hashlib.sha256(plain).hexdigest()[:20] + '"'
    return Script(plain, gzipped, etag)


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether If-None-Match names `etag` (weak comparison, as RFC 9110 asks for GET)."""
    if if_none_match is None:
        return False
    tags = [t.strip() for t in if_none_match.split(",")]
    return "*" in tags or etag in (t.removeprefix("W/") for t in tags)


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether Accept-Encoding takes gzip (and does not refuse it with `q=0`)."""
    for part in (accept_encoding or "").lower().split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip() in ("gzip", "*"):
            q = params.strip().removeprefix("q=").strip()
            try:
                return not q or float(q) > 0
            except ValueError:
                return False
    return False


def visitor_of(cookie: str | None) -> str | None:
    """The visitor id of the collector's cookie, if it holds one this collector could have
    minted (a random UUID): anything else is ignored and replaced, never trusted as an id."""
    if cookie is not None and _UUID.match(cookie):
        return cookie
    return None


def new_visitor() -> str:
    return str(uuid.uuid4())


def visitor_cookie(visitor: str, *, secure: bool) -> str:
    """The `Set-Cookie` value: host-only (the collector's host, served on the shop's domain),
    400 days, sent with top-level navigations from elsewhere but not with third-party
    requests (SameSite=Lax), Secure when the collector is reached over HTTPS."""
    cookie = f"{COOKIE}={visitor}; Max-Age={COOKIE_MAX_AGE}; Path=/; SameSite=Lax; HttpOnly"
    return cookie + "; Secure" if secure else cookie


def policy_of(binding: Binding) -> ConsentPolicy:
    """The source's consent policy, as `refine` builds it."""
    return ConsentPolicy(
        required=binding.consent_purposes,
        without=binding.without_consent,
        tcf_purposes=dict(binding.tcf_purposes) or dict(DEFAULT_TCF_PURPOSES),
    )


def consent_first(binding: Binding) -> bool:
    """Whether the script must send nothing before the visitor consents: the source requires
    purposes and drops events without them (they would be dropped anyway). With nothing
    required every event is kept; with `anonymous` it is kept anonymously: both are sent."""
    return bool(binding.consent_purposes) and binding.without_consent == "drop"


def with_visitor(
    messages: list[Any],
    visitor: str,
    arrival: Arrival,
    binding: Binding,
    field: str = "anonymousId",
) -> bool:
    """Give every message that will be kept as it came (its consent covers the source's
    required purposes, as `refine` decides it) the visitor id as its `field`, in place: the
    script's own `anonymousId` is a per-page random id (Snowplow's `nuid` is the collector's
    to set). Whether any did, so that the cookie is set: a message kept anonymously or dropped
    gets no id and sets no cookie."""
    policy = policy_of(binding)
    given = False
    for message in messages:
        if not isinstance(message, dict):
            continue  # refused by the protocol's check
        consent = consent_of(request_context(message, arrival, binding), policy)
        if decide(consent, policy).sets_cookie:
            message[field] = visitor
            given = True
    return given
