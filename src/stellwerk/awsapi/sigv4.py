"""AWS Signature Version 4, verified: the proof that a request comes from a key's holder and was
not altered on the way, as the AWS SDKs and CLI make it (header-based, `AWS4-HMAC-SHA256`), and
its asymmetric variant SigV4a (`AWS4-ECDSA-P256-SHA256`), which they use for calls to a global
endpoint (PutEvents with `EndpointId`): an ECDSA P-256 signature with a key pair derived from
the secret, for a set of regions (`X-Amz-Region-Set`) instead of one.

The access key id is a Stellwerk key's id and the secret access key is the key itself
(`swk_<id>_<secret>`) or its secret part alone (both are accepted): the server holds a sealed
copy of each key for this (migration 0007).
The signing key is derived from the secret once per day, region and service and remembered as
an HMAC keyed with it, so a request costs a copy of that HMAC over the string to sign and two
SHA-256 digests (the body's and the canonical request's).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Final, NamedTuple
from urllib.parse import quote, unquote

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

ALGORITHM: Final = "AWS4-HMAC-SHA256"
ALGORITHM_A: Final = "AWS4-ECDSA-P256-SHA256"  # SigV4a
REGION_SET: Final = "x-amz-region-set"
SERVICE: Final = "events"
MAX_SKEW: Final = timedelta(minutes=5)
_MAX_DERIVED: Final = 4096
_AMZ_DATE: Final = re.compile(r"[0-9]{8}T[0-9]{6}Z", re.ASCII)


class SignatureError(Exception):
    """The request's signature cannot be accepted. `code` is the AWS error code the SDKs raise
    (`IncompleteSignatureException`, `InvalidSignatureException`, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class SignedRequest(NamedTuple):
    """What the `Authorization` header claims: who signed, for which day, region and service.
    (A tuple: one is made per request, and a tuple is made fastest.)"""

    access_key_id: str
    date: str  # YYYYMMDD, the credential scope's day
    region: str  # SigV4a: the region set, `*` or a comma list
    service: str
    signed_headers: tuple[str, ...]
    amz_date: str  # YYYYMMDDTHHMMSSZ
    algorithm: str
    scope: str  # the credential scope as the string to sign names it
    signature: str


def parse(headers: Mapping[str, str], now: datetime) -> SignedRequest:
    """The signature's claims from the request's headers (names in lower case), checked for
    shape and freshness; the signature itself is checked by `Verifier.verify`.

    All but the signature and the freshness is the same on every call of a client within one
    second (the SDKs write the signature last): checked once and remembered (`_claimed`)."""
    authorization = headers.get("authorization")
    if not authorization:
        raise SignatureError(
            "MissingAuthenticationTokenException",
            "Request is missing Authentication Token",
        )
    amz_date = headers.get("x-amz-date", "")
    region_set = headers.get(REGION_SET, "")
    head, sep, signature = authorization.rpartition("Signature=")
    if (
        sep
        and signature
        and "," not in signature
        and " " not in signature
        and head.rstrip().endswith(",")  # a field of its own, after the others
    ):
        claimed, when = _claimed(head, ("Credential", "SignedHeaders"), amz_date, region_set)
    else:  # not remembered: the text holds the signature, new on every call
        claimed, when = _claimed.__wrapped__(
            authorization, ("Credential", "SignedHeaders", "Signature"), amz_date, region_set
        )
        signature = _fields(authorization)["Signature"]
    if abs(now - when) > MAX_SKEW:
        raise SignatureError(
            "InvalidSignatureException",
            f"Signature expired: {amz_date} is now earlier than or later than the server's "
            f"time {now:%Y%m%dT%H%M%SZ} by more than 5 minutes",
        )
    return SignedRequest._make((*claimed, signature))


@functools.lru_cache(maxsize=1024)
def _claimed(
    text: str, required: tuple[str, ...], amz_date: str, region_set: str
) -> tuple[tuple[str, str, str, str, tuple[str, ...], str, str, str], datetime]:
    """The claims of `Authorization` text with the fields `required`, `X-Amz-Date` and
    `X-Amz-Region-Set`, all but the signature (in `SignedRequest`'s order), checked; and the
    time `amz_date` names. Refusals raise, and are not remembered."""
    algorithm, credential, signed = _head(text, required)
    if algorithm == ALGORITHM_A:
        if len(credential) != 4 or credential[3] != "aws4_request":
            raise SignatureError(
                "IncompleteSignatureException",
                "Credential must be <access key id>/<date>/<service>/aws4_request",
            )
        key_id, date, service, _ = credential
        region = region_set
    else:
        if len(credential) != 5 or credential[4] != "aws4_request":
            raise SignatureError(
                "IncompleteSignatureException",
                "Credential must be <access key id>/<date>/<region>/<service>/aws4_request",
            )
        key_id, date, region, service, _ = credential
    if service != SERVICE:
        raise SignatureError(
            "InvalidSignatureException",
            f"Credential should be scoped to correct service: '{SERVICE}'",
        )
    if "host" not in signed:
        raise SignatureError("InvalidSignatureException", "'Host' must be a signed header")
    try:
        when = _read_amz_date(amz_date)
    except ValueError:
        raise SignatureError(
            "IncompleteSignatureException",
            "X-Amz-Date must be given as YYYYMMDDTHHMMSSZ",
        ) from None
    if "x-amz-date" not in signed:
        raise SignatureError("InvalidSignatureException", "'X-Amz-Date' must be a signed header")
    if algorithm == ALGORITHM_A and (not region or REGION_SET not in signed):
        raise SignatureError(
            "InvalidSignatureException", "'X-Amz-Region-Set' must be given and signed"
        )
    if amz_date[:8] != date:
        raise SignatureError(
            "InvalidSignatureException",
            f"Date in Credential scope does not match YYYYMMDD from X-Amz-Date: {date} != "
            f"{amz_date[:8]}",
        )
    if algorithm == ALGORITHM_A:  # the region set is a signed header, not in the scope
        scope = f"{date}/{service}/aws4_request"
    else:
        scope = f"{date}/{region}/{service}/aws4_request"
    return (key_id, date, region, service, signed, amz_date, algorithm, scope), when


def _head(text: str, required: tuple[str, ...]) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """The algorithm, the credential's parts and the signed headers of `Authorization` text
    that has the fields `required`."""
    algorithm, _, _ = text.strip().partition(" ")
    if algorithm not in (ALGORITHM, ALGORITHM_A):
        raise SignatureError(
            "IncompleteSignatureException",
            f"Authorization header requires the {ALGORITHM} or {ALGORITHM_A} algorithm",
        )
    fields = _fields(text)
    missing = [name for name in required if name not in fields]
    if missing:
        raise SignatureError(
            "IncompleteSignatureException",
            f"Authorization header requires {', '.join(missing)}",
        )
    credential = tuple(fields["Credential"].split("/"))
    return algorithm, credential, tuple(fields["SignedHeaders"].split(";"))


def _fields(authorization: str) -> dict[str, str]:
    _, _, rest = authorization.strip().partition(" ")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, sep, value = part.strip().partition("=")
        if sep:
            fields[name] = value.strip()
    return fields


def _read_amz_date(text: str) -> datetime:
    """`YYYYMMDDTHHMMSSZ` read by hand: `strptime` cost as much as the rest of `parse`."""
    if not _AMZ_DATE.fullmatch(text):
        raise ValueError(text)
    return datetime(
        int(text[0:4]),
        int(text[4:6]),
        int(text[6:8]),
        int(text[9:11]),
        int(text[11:13]),
        int(text[13:15]),
        tzinfo=UTC,
    )


def canonical_request(
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    signed: tuple[str, ...],
    body: bytes,
) -> str:
    """The request as SigV4 canonicalises it (headers given with lower-case names)."""
    lines = [method, _canonical_path(path), _canonical_query(query)]
    lines += [f"{name}:{' '.join(headers.get(name, '').split())}" for name in signed]
    lines += ["", ";".join(signed), hashlib.sha256(body).hexdigest()]
    return "\n".join(lines)


@functools.lru_cache(maxsize=256)
def _canonical_path(path: str) -> str:
    return quote(unquote(path or "/"), safe="/-_.~")


def _canonical_query(query: str) -> str:
    pairs = []
    for part in query.split("&") if query else []:
        name, _, value = part.partition("=")
        pairs.append((quote(unquote(name), safe="-_.~"), quote(unquote(value), safe="-_.~")))
    return "&".join(f"{n}={v}" for n, v in sorted(pairs))


def string_to_sign(claim: SignedRequest, canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return f"{claim.algorithm}\n{claim.amz_date}\n{claim.scope}\n{digest}"


def derive_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = hmac.digest(f"AWS4{secret}".encode(), date.encode(), "sha256")
    for part in (region, service, "aws4_request"):
        key = hmac.digest(key, part.encode(), "sha256")
    return key


# The order of P-256's group: SigV4a's private key is a counter-mode HMAC-SHA256 output below
# it (NIST SP 800-108), plus one.
_P256_ORDER: Final = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def derive_public_key(access_key_id: str, secret: str) -> ec.EllipticCurvePublicKey:
    """The public half of SigV4a's key pair for a key, derived as the SDKs derive the private
    half: HMAC-SHA256 keyed by `AWS4A<secret>` over the fixed input (counter 1, the algorithm's
    name, 0, the access key id, a try counter, 256 bits), the first result below n - 1."""
    key = f"AWS4A{secret}".encode()
    for attempt in range(1, 255):
        fixed = b"".join(
            [
                (1).to_bytes(4, "big"),
                ALGORITHM_A.encode(),
                b"\x00",
                access_key_id.encode(),
                bytes([attempt]),
                (256).to_bytes(4, "big"),
            ]
        )
        candidate = int.from_bytes(hmac.digest(key, fixed, "sha256"), "big")
        if candidate <= _P256_ORDER - 2:
            return ec.derive_private_key(candidate + 1, ec.SECP256R1()).public_key()
    raise ValueError("no SigV4a key for this secret")  # odds: 2^-32 per try, 254 tries


class Verifier:
    """Checks signatures, remembering derived signing keys by key, day and region (a bounded
    table, emptied when full: keys are re-derived at ~4 HMACs each), each as an HMAC already
    keyed with it: a copy of that HMAC signs a request. `hmac.digest(key, ...)` anew for each
    request (OpenSSL keys it and looks the algorithm up each time, and lets go of the GIL)
    cost the event loop's thread about 20 µs of CPU per request in a running server, against
    1.5 in a loop of calls; with the copy a verification costs some 7-10 µs less there
    (docs/eventbridge-api.md, "awsapi6")."""

    def __init__(self) -> None:
        self._derived: dict[tuple[str, int, str, str, str], hmac.HMAC] = {}
        self._public: dict[tuple[str, int], ec.EllipticCurvePublicKey] = {}

    def verify(
        self,
        claim: SignedRequest,
        secrets: tuple[str, ...],
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> None:
        """Raises `SignatureError` unless the request was signed with one of `secrets` as
        claimed (tried in order: a wrong one costs one more HMAC)."""
        canonical = canonical_request(method, path, query, headers, claim.signed_headers, body)
        to_sign = string_to_sign(claim, canonical).encode()
        if claim.algorithm == ALGORITHM_A:
            self._verify_a(claim, secrets, to_sign)
            return
        for variant, secret in enumerate(secrets):
            # A key's id names one secret for good (ids are random and never reused).
            slot = (claim.access_key_id, variant, claim.date, claim.region, claim.service)
            keyed = self._derived.get(slot)
            if keyed is None:
                if len(self._derived) >= _MAX_DERIVED:
                    self._derived.clear()
                signing_key = derive_key(secret, claim.date, claim.region, claim.service)
                keyed = self._derived[slot] = hmac.new(signing_key, digestmod=hashlib.sha256)
            mac = keyed.copy()
            mac.update(to_sign)
            expected = mac.hexdigest()
            if hmac.compare_digest(expected, claim.signature):
                return
        raise SignatureError(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you "
            "provided. Check your AWS Secret Access Key and signing method.",
        )

    def _verify_a(self, claim: SignedRequest, secrets: tuple[str, ...], to_sign: bytes) -> None:
        try:
            signature = bytes.fromhex(claim.signature)
        except ValueError:
            signature = b""
        for variant, secret in enumerate(secrets):
            slot = (claim.access_key_id, variant)
            public = self._public.get(slot)
            if public is None:
                if len(self._public) >= _MAX_DERIVED:
                    self._public.clear()
                public = derive_public_key(claim.access_key_id, secret)
                self._public[slot] = public
            try:
                public.verify(signature, to_sign, ec.ECDSA(hashes.SHA256()))
            except (InvalidSignature, ValueError):
                continue
            return
        raise SignatureError(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you "
            "provided. Check your AWS Secret Access Key and signing method.",
        )
