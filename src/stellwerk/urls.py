"""The URLs users give Stellwerk to call (checks, token endpoints, webhooks), as documented.

The server's check is the SSRF guard (`stellwerk.delivery.targets.ssrf`): http or https, no
credentials, a host that yarl reads and that is neither localhost nor a number (a name, or a
public address written canonically). The document says the same in JSON Schema, with one
narrowing: hosts are ASCII and are not IP addresses, since "public" is no pattern.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

# Printable ASCII but what yarl refuses in a host (":", "@", "[", "\\", "]") and what ends one
# ("/", "?", "#").
_HOST: Final = r"[!-\"$-.0-9;->A-Z^-~]+"
_PORT: Final = (
    r"(?::(?:[0-9]{0,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?"
)
PUBLIC_URL_PATTERN: Final = rf"^https?://{_HOST}{_PORT}(?:[/?#].*)?$"
# What the guard refuses within that: loopback names, and hosts that are numbers (an address in
# any notation, which the guard takes only when canonical and public).
_REFUSED_HOSTS: Final = [
    r"^https?://(?:[^:/?#]*\.)?[lL][oO][cC][aA][lL][hH][oO][sS][tT]\.?(?:[:/?#]|$)",
    r"^https?://(?:0[xX][0-9a-fA-F]*|[0-9]+)(?:\.(?:0[xX][0-9a-fA-F]*|[0-9]+)){0,3}\.?(?:[:/?#]|$)",
]
PUBLIC_URL_SCHEMA: Final = {
    "pattern": PUBLIC_URL_PATTERN,
    "not": {"anyOf": [{"pattern": refused} for refused in _REFUSED_HOSTS]},
}

# `scheme://host[:port]`, a web origin, as `tracking.model.checked_origin` takes it.
ORIGIN_PATTERN: Final = rf"^https?://{_HOST}{_PORT}/?$"

# For the document only: decoding leaves the check to the guard, whose error names the field.
PublicUrl = Annotated[str, msgspec.Meta(extra_json_schema=PUBLIC_URL_SCHEMA)]
