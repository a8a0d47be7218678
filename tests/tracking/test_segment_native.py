"""The C reader (`tracking/_segment_native.c`) against the Python reader it stands in for:
for random batches, spelled with escapes, raw unicode, deep nesting, huge numbers and
whitespace, and for malformed ones, the collector stores the same events byte for byte and
gives the same answers with either; and no input, random bytes, a mutated body or a layout
that does not fit, makes it crash or read out of bounds."""

from __future__ import annotations

import array
import os
import subprocess
import sys
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.tracking.test_segment_reader import (
    _PHASES,
    CHROME,
    Taken,
    _arrivals,
    _comparable,
    _json_values,
    _made_up,
    _metrics,
    _pseudonymised,
    _purposes,
    _sources,
    _times,
    batches,
    binding,
    general,
    refiner,
    shop_message,
)

from stellwerk.api import ApiError
from stellwerk.ingest import DecodedEvent
from stellwerk.service import ServiceError
from stellwerk.tracking import Arrival, Binding, Collector, segment_reader
from stellwerk.tracking.collector import DROPPED, Events
from stellwerk.tracking.segment import SEGMENT

try:
    from stellwerk.tracking import _segment_native as native
except ImportError:  # pragma: no cover - a source tree without `pip install`
    pytest.skip("the C reader is not built", allow_module_level=True)


class Spelled:
    """A JSON value written as given (a huge number, a deep nesting)."""

    def __init__(self, text: str) -> None:
        self.text = text


class Members(list[tuple[str, Any]]):
    """A JSON object written member by member: a name may come twice."""


def _string(text: str, mode: int) -> str:
    """`text` as a JSON string: 0 as msgspec writes it, 1 with every non-ASCII character and
    slash escaped (as Python's `json` and some SDKs write them), 2 with upper-case escapes."""
    out = ['"']
    for char in text:
        code = ord(char)
        if char == '"' or char == "\\":
            out.append("\\" + char)
        elif code < 0x20:
            out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r"}.get(char, f"\\u{code:04x}"))
        elif mode and char == "/":
            out.append("\\/")
        elif mode and code > 0x7F:
            units = [code] if code < 0x10000 else divmod(code - 0x10000, 0x400)
            if code >= 0x10000:
                units = [0xD800 + units[0], 0xDC00 + units[1]]
            out.extend((f"\\u{u:04X}" if mode == 2 else f"\\u{u:04x}") for u in units)
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def spell(value: Any, mode: int, space: str) -> str:
    """`value` as JSON text, strings in `mode`, `space` after separators."""
    if isinstance(value, Spelled):
        return value.text
    if isinstance(value, Members):
        members = (f"{_string(k, mode)}:{space}{spell(v, mode, space)}" for k, v in value)
        return "{" + f",{space}".join(members) + "}"
    if isinstance(value, dict):
        members = (f"{_string(k, mode)}:{space}{spell(v, mode, space)}" for k, v in value.items())
        return "{" + f",{space}".join(members) + "}"
    if isinstance(value, list):
        return "[" + f",{space}".join(spell(v, mode, space) for v in value) + "]"
    if isinstance(value, str):
        return _string(value, mode)
    return msgspec.json.encode(value).decode()


_ODD_VALUES = st.sampled_from(
    [
        "1e400",
        "-1E-400",
        "123456789012345678901234567890123456789",
        "-0.0",
        "0e0",
        "1E+2",
        "[" * 150 + "]" * 150,
        "[" * 199 + "]" * 199,
        '{"a":' * 260 + "1" + "}" * 260,
        "[" * 1200 + "]" * 1200,
        '"\\ud83d\\ude00"',
        '"\\u00e9\\u0000"',
        '"Bär 😀"',
    ]
).map(Spelled)
_TEXTS = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=8
) | st.sampled_from(["Bär", "😀", "a/b", 'say "hi"', "back\\slash", "line\nbreak", "x, ", '": '])


@st.composite
def odd_batches(draw: st.DrawFn) -> dict[str, Any]:
    """`batches`, with odd values and texts in the places a message keeps raw and reads."""
    body = draw(batches())
    for message in body["batch"]:
        if not isinstance(message, dict):
            continue
        if draw(st.booleans()):
            message.setdefault("properties", {})
            if isinstance(message["properties"], dict):
                message["properties"][draw(_TEXTS)] = draw(_ODD_VALUES | _TEXTS)
        if draw(st.integers(0, 5)) == 0:
            name = draw(
                st.sampled_from(["userId", "anonymousId", "event", "messageId", "timestamp"])
            )
            message[name] = draw(_TEXTS | _ODD_VALUES)
        if draw(st.integers(0, 7)) == 0:
            message[draw(_TEXTS)] = draw(_ODD_VALUES)
    return body


def _odd(draw: st.DrawFn, one_in: int) -> bool:
    return draw(st.integers(1, one_in)) == one_in


_TIMESTAMPS = st.sampled_from(
    [
        "2026-12-04T10:00:00.000Z",
        "2026-12-04T10:00:00.123456+00:00",
        "2026-12-04T10:00:00Z",
        "1971-01-01T00:00:00-23:59",
        "2999-12-28T23:59:59.5+01:30",
    ]
)


@st.composite
def shop_contexts(draw: st.DrawFn) -> Any:
    """A context as SDKs send it, odd now and then."""
    if _odd(draw, 12):
        return draw(_ODD_VALUES | st.sampled_from([None, "ctx", Spelled("[]")]))
    context: dict[str, Any] = {}
    if not _odd(draw, 4):
        context["ip"] = draw(st.sampled_from(["81.2.69.160", "2a02:8100::1", "81.2.69.1"]))
    if not _odd(draw, 4):
        context["userAgent"] = draw(st.sampled_from([CHROME, "curl/8", "Googlebot/2.1"]))
    if not _odd(draw, 3):
        context["page"] = {"url": "https://shop.example/p?utm_source=news", "referrer": ""}
    if not _odd(draw, 5):
        purposes = ["analytics", "advertising"] if not _odd(draw, 3) else draw(_purposes)
        context["consent"] = {"purposes": purposes}
    if _odd(draw, 6):
        context["traits"] = {"email": draw(st.sampled_from([" A@B.example ", "", 7]))}
    if _odd(draw, 3):
        context["library"] = {"name": draw(_TEXTS), "version": "2.3.2"}
    if _odd(draw, 10):
        context[draw(st.sampled_from(["stellwerk", "consent", "page", "ip"]))] = draw(_ODD_VALUES)
    return context


_IDS = st.sampled_from(["u-1", "u-2", "Bär", "a/b"])
_ODD_IDS = st.sampled_from(["", 7, None, "x" * 300, "é" * 256, "é" * 257, Spelled('"\\u0075"')])


@st.composite
def shop_messages(draw: st.DrawFn) -> Any:
    """Mostly a message the C reader takes itself; each of its member odd now and then."""
    if _odd(draw, 30):
        return draw(_ODD_VALUES | st.sampled_from([None, 7, "message", Spelled("[]")]))
    kind = draw(st.sampled_from(["track", "identify", "page", "screen", "group", "alias"]))
    members = Members()
    members.append(("type", kind if not _odd(draw, 20) else draw(_TEXTS | _ODD_IDS)))
    members.append(("messageId", str(draw(st.uuids())) if not _odd(draw, 10) else draw(_ODD_IDS)))
    if not _odd(draw, 4):
        members.append(("userId", draw(_IDS) if not _odd(draw, 10) else draw(_ODD_IDS)))
    if not _odd(draw, 3):
        members.append(("anonymousId", draw(_IDS) if not _odd(draw, 10) else draw(_ODD_IDS)))
    for name, needed in (("event", "track"), ("groupId", "group"), ("previousId", "alias")):
        if kind == needed or _odd(draw, 6):
            members.append((name, "Order Completed" if not _odd(draw, 10) else draw(_ODD_IDS)))
    for name in ("properties", "traits", "integrations"):
        if _odd(draw, 2):
            odd = _ODD_VALUES if _odd(draw, 10) else _json_values
            value: Any = draw(st.dictionaries(_TEXTS, odd, max_size=3))
            if name == "traits" and _odd(draw, 4):
                value["email"] = "Someone@Shop.example"
            members.append((name, value if not _odd(draw, 12) else draw(_ODD_IDS)))
    if not _odd(draw, 5):
        members.append(("context", draw(shop_contexts())))
    if not _odd(draw, 6):
        members.append(("timestamp", draw(_TIMESTAMPS if not _odd(draw, 6) else _times)))
    for name, value in (
        ("sentAt", "2026-12-04T10:00:01Z"),
        ("ip", "81.2.69.7"),
        ("writeKey", "wk"),
        ("gdpr_consent", "CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA"),
        ("context.stellwerk.consent", {"purposes": {"advertising": True}}),
        ("name", "Home"),
        ("originalTimestamp", "2026-12-04T10:00:00Z"),
    ):
        if _odd(draw, 8):
            members.append((name, value if not _odd(draw, 6) else draw(_ODD_IDS | _ODD_VALUES)))
    if _odd(draw, 6):
        members.append((draw(_TEXTS), draw(_json_values | _ODD_VALUES)))
    if _odd(draw, 15):
        members.append(draw(st.sampled_from(members)))  # a member twice
    return members


@st.composite
def shop_batches(draw: st.DrawFn) -> Any:
    body = Members([("batch", draw(st.lists(shop_messages(), min_size=1, max_size=12)))])
    for name, value in (
        ("sentAt", "2026-12-04T10:00:01.000Z"),
        ("context", {"ip": "81.2.69.9", "consent": {"purposes": ["analytics"]}}),
        ("integrations", {"All": True}),
        ("writeKey", "wk"),
    ):
        if _odd(draw, 4):
            body.append((name, value if not _odd(draw, 6) else draw(_ODD_IDS | _ODD_VALUES)))
    if _odd(draw, 20):
        body.append(draw(st.sampled_from(body)))
    return body


_shop_sources = st.builds(
    binding,
    without_consent=st.sampled_from(["drop", "anonymous"]),
    consent_purposes=st.sampled_from([(), (), ("analytics",), ("analytics", "advertising")]),
    full_ip=st.booleans(),
    pseudonymise=st.sampled_from(
        [(), ("userId",), ("userId", "anonymousId"), ("anonymousId",), ("userId", "userId")] * 4
        + [None]
    ).flatmap(lambda kept: st.just(kept) if kept is not None else _pseudonymised.map(tuple)),
    internal_hosts=st.sampled_from([(), ("shop.example",)]),
)


async def _stored(
    content: bytes, arrival: Arrival, source: Binding, *, with_native: bool
) -> tuple[Any, list[Any]]:
    """The collector's answer and stored events for a `/v1/batch` body, by the C reader or
    by the Python reader alone."""
    saved = segment_reader.native
    segment_reader.native = native if with_native else None
    try:
        body = segment_reader.read(content, None)
    finally:
        segment_reader.native = saved
    if body is None:  # the route decodes it whole then
        got, events = await general(content, None, arrival, source)
    else:
        taken = Taken()
        collector = Collector(taken, _metrics(), refiner().stored, quick=refiner())  # type: ignore[arg-type]
        try:
            items = body.messages(refiner(), arrival, source, max_batch=50)
            got = await collector.collect(source, arrival, items, SEGMENT)
        except (ServiceError, ApiError) as exc:
            got = f"{type(exc).__name__}: {exc}"
        events = taken.calls
    if isinstance(got, str):
        return got, []
    answer = (got.accepted, got.dropped, got.failed)
    return answer, _comparable(events, _made_up(events, content))


async def same_either_way(content: bytes, arrival: Arrival, source: Binding) -> None:
    # What the C reader leaves is taken by the Python reader of the whole body, which must
    # read every body the C reader scans.
    try:
        compact = segment_reader._compact(content)
    except msgspec.DecodeError:
        compact = None
    if compact is not None and native.scan(compact) is not None:
        assert segment_reader._read(compact, None) is not None
    want = await _stored(content, arrival, source, with_native=False)
    got = await _stored(content, arrival, source, with_native=True)
    assert got == want


@settings(max_examples=150, deadline=None, phases=_PHASES)
@given(
    body=shop_batches(),
    mode=st.integers(0, 2),
    space=st.sampled_from(["", "", " "]),
    source=_shop_sources,
    arrival=_arrivals,
)
async def test_a_shops_batch_is_stored_as_the_python_reader_stores_it(
    body: Any, mode: int, space: str, source: Binding, arrival: Arrival
) -> None:
    content = spell(body, mode, space).encode()
    await same_either_way(content, arrival, source)


@settings(max_examples=150, deadline=None, phases=_PHASES)
@given(
    body=odd_batches(),
    mode=st.integers(0, 2),
    space=st.sampled_from(["", "", " "]),
    source=_sources,
    arrival=_arrivals,
)
async def test_a_batch_is_stored_as_the_python_reader_stores_it(
    body: dict[str, Any], mode: int, space: str, source: Binding, arrival: Arrival
) -> None:
    content = spell(body, mode, space).encode()
    await same_either_way(content, arrival, source)


def _mutated(content: bytes, data: st.DataObject) -> bytes:
    """`content` with a few bytes deleted, replaced or put in."""
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(content)))
        how = data.draw(st.sampled_from(["delete", "replace", "insert"]))
        byte = data.draw(st.sampled_from([b"\\", b'"', b"{", b"}", b"[", b",", b":", b"\xff"]))
        byte = data.draw(st.sampled_from([byte, data.draw(st.binary(min_size=1, max_size=1))]))
        if how == "delete":
            content = content[:at] + content[at + 1 :]
        elif how == "replace":
            content = content[:at] + byte + content[at + 1 :]
        else:
            content = content[:at] + byte + content[at:]
    return content


@settings(max_examples=150, deadline=None, phases=_PHASES)
@given(body=batches(), data=st.data(), source=_sources, arrival=_arrivals)
async def test_a_malformed_batch_is_answered_as_the_python_reader_answers_it(
    body: dict[str, Any], data: st.DataObject, source: Binding, arrival: Arrival
) -> None:
    content = _mutated(msgspec.json.encode(body), data)
    await same_either_way(content, arrival, source)


@settings(max_examples=500, deadline=None)
@given(content=st.binary(max_size=300) | st.binary(max_size=40).map(lambda b: b'{"batch":[' + b))
def test_no_bytes_make_the_scan_fail(content: bytes) -> None:
    scanned = native.scan(content)
    assert scanned is None or msgspec.json.decode(content)  # what it takes is JSON


def _take(content: bytes, layout: bytes) -> list[Any]:
    taker = segment_reader._Taker(
        refiner(), Arrival(received_at="2026-12-05T08:00:00Z"), binding(pseudonymise=("userId",))
    )
    return taker.take_native(content, layout)


@settings(max_examples=150, deadline=None, phases=_PHASES)
@given(body=odd_batches(), data=st.data())
def test_no_mutated_body_makes_the_c_reader_fail(body: dict[str, Any], data: st.DataObject) -> None:
    content = _mutated(spell(body, data.draw(st.integers(0, 2)), "").encode(), data)
    scanned = native.scan(content)
    if scanned is not None:
        taken = _take(content, scanned[0])
        assert all(item is None or item is DROPPED or type(item) is DecodedEvent for item in taken)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_a_layout_that_does_not_fit_its_content_is_refused(data: st.DataObject) -> None:
    """`take` trusts no layout: one of another body, cut, or with numbers changed is refused
    (or read within the content), never read out of bounds."""
    content = msgspec.json.encode({"batch": [shop_message(n) for n in range(3)]})
    scanned = native.scan(content)
    assert scanned is not None
    layout = bytearray(scanned[0])
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(layout) - 1))
        layout[at] = data.draw(st.integers(0, 255))
    layout = layout[: data.draw(st.integers(0, len(layout)))]
    short = content[: data.draw(st.integers(0, len(content)))]
    refused: ValueError | None = None
    try:
        taken = _take(short, bytes(layout))
    except ValueError as exc:
        refused, taken = exc, []
    assert refused is None or "layout" in str(refused)
    assert all(item is None or item is DROPPED or type(item) is DecodedEvent for item in taken)


async def test_a_shops_batch_is_taken_in_c_whole() -> None:
    """Not hollow: the common shape (the benchmark's) is taken by the C reader itself, every
    message, and stored as the Python reader stores it."""
    source = binding(pseudonymise=("userId",))
    arrival = Arrival(received_at="2026-12-05T08:00:00Z", ip="192.0.2.7", headers={})
    batch = [{**shop_message(n), "context": {**shop_message(n)["context"]}} for n in range(20)]
    for message in batch:
        del message["context"]["traits"]  # an e-mail address to hash is Python's
    content = msgspec.json.encode({"batch": batch, "sentAt": "2026-12-04T10:00:01Z"})
    scanned = native.scan(content)
    assert scanned is not None
    for _ in range(2):  # the contexts worked out, then kept
        taken = _take(content, scanned[0])
        assert type(taken) is Events
        assert all(type(item) is DecodedEvent for item in taken)
        assert [item.index for item in taken] == list(range(len(batch)))
        await same_either_way(content, arrival, source)


def test_the_python_reader_is_taken_when_the_environment_says() -> None:
    code = "from stellwerk.tracking import segment_reader as s; print(s.native is None)"
    for value, want in (("0", "True"), ("1", "False")):
        env = {**os.environ, "STELLWERK_SEGMENT_NATIVE": value}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == want


def test_the_events_made_in_c_are_those_their_class_makes() -> None:
    """`take` makes each `DecodedEvent` without its `__init__` (its slots set one by one): every
    slot holds what the class's own constructor would put there, and a slot added to the class
    later fails this test rather than being left unset."""
    content = msgspec.json.encode({"batch": [shop_message(n) for n in range(4)]})
    scanned = native.scan(content)
    assert scanned is not None
    _take(content, scanned[0])  # the contexts worked out and kept
    taken = _take(content, scanned[0])
    assert type(taken) is Events
    assert len(taken) == 4
    for index, made in enumerate(taken):
        assert type(made) is DecodedEvent
        args = (made.index, made.encoded, made.id, made.source, made.type, made.subject)
        want = DecodedEvent(*args)
        for name in DecodedEvent.__slots__:
            assert getattr(made, name) == getattr(want, name), name
        assert made.index == index
        assert made.source == "/sources/shop"
        assert made.event == want.event  # decoded from the bytes on first use


def test_a_string_is_scanned_to_its_first_odd_byte_wherever_that_lies() -> None:
    """`scan` reads a string many bytes at a time while they are plain: a quote, a backslash,
    a control character or a byte past ASCII anywhere in a string, at any distance from its
    start, is seen (the body refused as the strict reader refuses it), and a plain one
    changes nothing, not even where the next member starts."""
    plain = set(range(0x20, 0x80)) - {ord('"'), ord("\\")}
    for length in range(41):
        for at in range(length):
            for byte in range(256):
                text = bytearray(b"a" * length)
                text[at] = byte
                content = b'{"batch":[{"x":"' + bytes(text) + b'","y":1}]}'
                scanned = native.scan(content)
                assert (scanned is not None) == (byte in plain), (length, at, byte)
                if scanned is None:
                    continue
                layout = array.array("i", scanned[0])
                # Past the count and the shared members: the message's count of members,
                # then each member's key and value (offset, length).
                assert layout[7] == 2
                key = content.rindex(b'"y"') + 1
                assert layout[8 + 4 : 8 + 8].tolist() == [key, 1, key + 3, 1]
