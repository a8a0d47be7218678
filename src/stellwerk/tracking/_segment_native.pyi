"""The Segment reader's common case in C (`_segment_native.c`); `segment_reader` calls it."""

from collections.abc import Callable
from typing import Any

def scan(content: bytes, /) -> tuple[bytes, str | None] | None:
    """A `/v1/batch` body (strict compact JSON) as its messages' members' places (the layout)
    and its `writeKey` (a str, or None for none or null); None: one for the Python reader."""

def take(
    content: bytes,
    layout: bytes,
    seen: dict[bytes, Any],
    canonical: int,
    generation: int,
    resolve: Callable[[bytes], Any],
    pseudonyms: dict[str, str],
    pseudonym: Callable[[str], str],
    user_path: bool,
    anonymous_path: bool,
    externals: dict[str, bytes],
    external: Callable[[str], bytes],
    own: bytes,
    received_epoch: int,
    keep_full_ip: bool,
    source: bytes,
    source_text: str,
    event: type,
    events: type[list[Any]],
    max_size: int,
    dropped: object,
    email_part: Callable[[str], bytes],
    /,
) -> list[Any]:
    """Each message of the layout: its event (of type `event`, a `DecodedEvent`, `index` its
    place among the events), `dropped`, or None (the Python reader's). A list of type `events`
    when every message is an event (a plain list otherwise)."""
