"""PutEvents' two ways of reading entries: a call of the usual shape is decoded straight into
typed entries and each written as its stored event piece by piece; any other call is read as
JSON and each entry checked the general way. Both must give the same answers and the same
events; the signature's claims and the ids made per call are checked here too."""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from stellwerk.awsapi import operations
from stellwerk.awsapi.ids import new_ids, request_ids
from stellwerk.awsapi.sigv4 import SignatureError, Verifier, parse

NOW = "2026-12-05T05:00:00.123456Z"
NOW_JSON = b'"' + NOW.encode() + b'"'  # as `put_events` gives it `_stored_fast`
ENTRIES: list[dict[str, Any]] = [
    {"Source": "com.shop", "DetailType": "Order", "Detail": '{"order": 1, "name": "Zoë"}'},
    {"Source": "s", "DetailType": "t", "Detail": "{}", "Resources": ["arn:a", "arn:b"]},
    {"Source": "s", "DetailType": "t", "Detail": '{\n  "lines": [1, 2.5, null]\n}'},
    {"Source": "s", "DetailType": "t", "Detail": "{}", "Time": "2026-12-01T13:00:00+01:00"},
    {"Source": "s", "DetailType": "t", "Detail": "{}", "Time": 1764590400},
    {"Source": "s", "DetailType": "t", "Detail": "{}", "EventBusName": "orders"},
    {
        "Source": "s",
        "DetailType": "t",
        "Detail": "{}",
        "EventBusName": "arn:aws:events:eu-central-1:default:event-bus/orders",
    },
    # Refused entries: each with the answer the general way gives.
    {"Source": "", "DetailType": "t", "Detail": "{}"},
    {"DetailType": "t", "Detail": "{}"},
    {"Source": "s", "Detail": "{}"},
    {"Source": "s", "DetailType": "t"},
    {"Source": "s", "DetailType": "t", "Detail": "[1]"},
    {"Source": "s", "DetailType": "t", "Detail": '{"a": 1} x'},
    {"Source": "s", "DetailType": "t", "Detail": '{"a": tru}'},
    {"Source": "s", "DetailType": "t", "Detail": "{}", "Time": "yesterday"},
    {"Source": "s", "DetailType": "t", "Detail": "{}", "EventBusName": "arn:aws:events:x:y:rule/r"},
]


def _either(way: Any, *args: Any) -> tuple[str, Any, int] | tuple[str, str]:
    """What one way makes of an entry: the bus, the stored event decoded and the counted size,
    or the entry's error code and message."""
    try:
        bus, stored, size = way(*args)
    except operations._EntryError as exc:
        return exc.code, exc.message
    return bus, msgspec.json.decode(stored.encoded), size


@pytest.mark.parametrize("entry", ENTRIES, ids=range(len(ENTRIES)))
def test_the_fast_way_answers_and_stores_as_the_general_way(entry: dict[str, Any]) -> None:
    params = operations.put_events_params(json.dumps({"Entries": [entry]}).encode())
    assert params is not None
    (typed,) = params["Entries"]
    assert isinstance(typed, operations._Entry)
    event_id = str(uuid.uuid4())
    fast = _either(operations._stored_fast, b'"eu-central-1"', typed, 0, event_id, NOW_JSON)
    general = _either(operations._stored, "eu-central-1", entry, 0, event_id, NOW)
    assert fast == general
    if len(fast) == 3:
        bus, event, _ = fast
        assert bus in ("default", "orders")
        assert event["id"] == event_id
        assert event["awsregion"] == "eu-central-1"


def test_an_entry_is_written_on_one_line_with_its_detail_as_sent() -> None:
    one_line = '{"order": 1,   "pad": "x"}'
    spread = '{\n  "order": 2\n}'
    params = operations.put_events_params(
        json.dumps(
            {
                "Entries": [
                    {"Source": "s", "DetailType": "t", "Detail": d} for d in (one_line, spread)
                ]
            }
        ).encode()
    )
    assert params is not None
    written = [
        operations._stored_fast(b'"r"', entry, n, f"id-{n}", NOW_JSON)[1].encoded
        for n, entry in enumerate(params["Entries"])
    ]
    assert all(b"\n" not in w and b"\r" not in w for w in written)
    assert written[0].endswith(b',"data":' + one_line.encode() + b"}")
    assert written[1].endswith(b',"data":{"order":2}}')


@pytest.mark.parametrize(
    "body",
    [
        b'{"Entries": ["not an object"]}',
        b'{"Entries": [{"Source": null, "DetailType": "t", "Detail": "{}"}]}',
        b'{"Entries": [{"Source": 5, "DetailType": "t", "Detail": "{}"}]}',
        b'{"Entries": [{"Source": "s", "DetailType": "t", "Detail": "{}", "Time": true}]}',
        b'{"Entries": [{"Source": "s", "DetailType": "t", "Detail": "{}", "Resources": [1]}]}',
        b'{"Entries": {}}',
        b"{}",
        b"[]",
        b"not json",
        b"",
    ],
)
def test_a_call_of_another_shape_is_left_to_the_general_way(body: bytes) -> None:
    assert operations.put_events_params(body) is None


def test_made_ids_are_random_version_4_uuids_and_request_ids_differ() -> None:
    ids = new_ids(200)
    assert len(set(ids)) == 200
    for made in ids:
        parsed = uuid.UUID(made)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, made)
    requests = [request_ids() for _ in range(1000)]
    assert len(set(requests)) == 1000
    assert all(str(uuid.UUID(r)) == r for r in requests)


def test_ids_come_from_batches_and_each_is_handed_out_once() -> None:
    # Ten at a time across several batches (256 each), then more than a batch at once.
    handed = [made for _ in range(100) for made in new_ids(10)] + new_ids(700)
    assert len(handed) == len(set(handed)) == 1700
    assert {uuid.UUID(made).version for made in handed} == {4}


def test_a_forked_child_does_not_hand_out_its_parent_s_ids() -> None:
    new_ids(1)  # the parent holds a batch
    reading, writing = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child)
        os.close(reading)
        os.write(writing, " ".join(new_ids(10)).encode())
        os._exit(0)
    os.close(writing)
    with os.fdopen(reading) as pipe:
        childs = set(pipe.read().split())
    assert os.waitpid(child, 0)[1] == 0
    assert len(childs) == 10
    assert not childs & set(new_ids(255))


def _signed(authorization_of: Any = None) -> tuple[dict[str, str], bytes]:
    body = b'{"Entries": []}'
    request = AWSRequest(
        method="POST",
        url="http://stellwerk/",
        data=body,
        headers={"X-Amz-Target": "AWSEvents.PutEvents"},
    )
    SigV4Auth(Credentials("0123456789abcdef", "secret"), "events", "eu-central-1").add_auth(request)
    headers = {k.lower(): v for k, v in request.headers.items()}
    headers["host"] = "stellwerk"
    if authorization_of is not None:
        headers["authorization"] = authorization_of(headers["authorization"])
    return headers, body


def _verify(headers: dict[str, str], body: bytes, verifier: Verifier | None = None) -> None:
    claim = parse(headers, datetime.now(UTC))
    (verifier or Verifier()).verify(claim, ("secret",), "POST", "/", "", headers, body)


def test_a_signature_is_read_wherever_it_stands_and_checked_every_time() -> None:
    verifier = Verifier()
    headers, body = _signed()
    _verify(headers, body, verifier)

    def signature_first(text: str) -> str:
        algorithm, _, rest = text.partition(" ")
        fields = [f.strip() for f in rest.split(",")]
        return f"{algorithm} {fields[2]}, {fields[0]}, {fields[1]}"

    _verify(*_signed(signature_first))
    # The same credential with another signature: its first part is remembered, the
    # signature never.
    forged = dict(headers)
    forged["authorization"] = headers["authorization"][:-4] + "0000"
    with pytest.raises(SignatureError) as refused:
        _verify(forged, body, verifier)
    assert refused.value.code == "InvalidSignatureException"


@pytest.mark.parametrize(
    ("change", "code", "words"),
    [
        (lambda h: h.pop("authorization"), "MissingAuthenticationTokenException", "missing"),
        (
            lambda h: h.update(authorization=h["authorization"].rpartition(",")[0]),
            "IncompleteSignatureException",
            "requires Signature",
        ),
        (
            lambda h: h.update(
                authorization=h["authorization"].replace(", Signature=", "Signature=")
            ),
            "IncompleteSignatureException",
            "requires Signature",
        ),
        (
            lambda h: h.update(authorization=h["authorization"].replace("AWS4-HMAC", "AWS3")),
            "IncompleteSignatureException",
            "algorithm",
        ),
        (lambda h: h.update({"x-amz-date": ""}), "IncompleteSignatureException", "X-Amz-Date"),
        (
            lambda h: h.update({"x-amz-date": "20200101T000000Z"}),
            "InvalidSignatureException",
            "does not match",
        ),
    ],
)
def test_a_malformed_signature_is_refused_with_the_sdk_s_code(
    change: Any, code: str, words: str
) -> None:
    headers, body = _signed()
    _verify(headers, body)  # the same credential read once already
    change(headers)
    with pytest.raises(SignatureError) as refused:
        _verify(headers, body)
    assert refused.value.code == code
    assert words in refused.value.message
