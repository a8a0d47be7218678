"""Secrets at rest: sealed values round-trip, and the wrong key or a changed byte is caught."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stellwerk.secrets import (
    ENV_VAR,
    KEY_FILE,
    DecryptionError,
    SecretBox,
    SecretKeyError,
    derive_key,
    load_or_create_key,
)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


@given(st.text(), st.text(max_size=40))
def test_round_trip(plaintext: str, associated: str) -> None:
    box = SecretBox(KEY)
    token = box.encrypt(plaintext, associated)
    assert box.decrypt(token, associated) == plaintext


def test_tokens_are_versioned_carry_the_key_id_and_hide_the_plaintext() -> None:
    box = SecretBox(KEY)
    first, second = box.encrypt("hunter2"), box.encrypt("hunter2")
    assert first != second  # fresh nonce each time
    version, key_id, body = first.split(".")
    assert version == "swk1"
    assert key_id == box.key_id
    assert "hunter2" not in first
    assert b"hunter2" not in base64.urlsafe_b64decode(body + "==")
    assert "hunter2" not in repr(box)
    assert KEY.hex() not in repr(box)


def test_every_changed_character_is_detected() -> None:
    box = SecretBox(KEY)
    token = box.encrypt("client-secret-value")
    body_start = token.rindex(".") + 1
    for index in range(body_start, len(token)):
        changed = token[:index] + ("A" if token[index] != "A" else "B") + token[index + 1 :]
        with pytest.raises(DecryptionError):
            box.decrypt(changed)


def test_wrong_key_says_which_key_sealed_it() -> None:
    token = SecretBox(OTHER_KEY).encrypt("x")
    box = SecretBox(KEY)
    with pytest.raises(DecryptionError, match=f"sealed with key {token.split('.')[1]}"):
        box.decrypt(token)


def test_a_token_for_another_record_does_not_open() -> None:
    box = SecretBox(KEY)
    token = box.encrypt("x", "acme/crm")
    with pytest.raises(DecryptionError, match="altered, or belongs to another record"):
        box.decrypt(token, "acme/billing")


def test_a_forged_key_id_does_not_help() -> None:
    box = SecretBox(KEY)
    _, _, body = box.encrypt("x").split(".")
    old = SecretBox(OTHER_KEY, previous=[KEY])
    with pytest.raises(DecryptionError):
        old.decrypt(f"swk1.{old.key_id}.{body}")


def test_previous_keys_still_open_old_values() -> None:
    token = SecretBox(OTHER_KEY).encrypt("rotated")
    rotated = SecretBox(KEY, previous=[OTHER_KEY])
    assert rotated.decrypt(token) == "rotated"
    assert rotated.encrypt("new").split(".")[1] == SecretBox(KEY).key_id


def test_derived_keys_differ_by_purpose_and_master_and_reveal_neither() -> None:
    cookies = derive_key(KEY, "status-pages sessions")
    assert len(cookies) == 32
    assert cookies == derive_key(KEY, "status-pages sessions")  # every process agrees
    assert cookies != derive_key(KEY, "status-pages links")
    assert cookies != derive_key(OTHER_KEY, "status-pages sessions")
    assert KEY not in (cookies, derive_key(KEY, ""))
    with pytest.raises(SecretKeyError):
        derive_key(b"short", "anything")


@pytest.mark.parametrize("token", ["", "plain", "swk2.abc.def", "swk1.x", "swk1.a.b.c"])
def test_malformed_tokens(token: str) -> None:
    with pytest.raises(DecryptionError):
        SecretBox(KEY).decrypt(token)


def test_truncated_token_is_corrupt() -> None:
    box = SecretBox(KEY)
    with pytest.raises(DecryptionError, match="too short"):
        box.decrypt(f"swk1.{box.key_id}.AAAA")


def test_key_from_the_environment(tmp_path: Path) -> None:
    encoded = base64.b64encode(KEY).decode()
    assert load_or_create_key(tmp_path, {ENV_VAR: encoded}) == KEY
    urlsafe = base64.urlsafe_b64encode(KEY).decode().rstrip("=")
    assert load_or_create_key(tmp_path, {ENV_VAR: urlsafe}) == KEY
    assert not (tmp_path / KEY_FILE).exists()


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("not base64!", "not base64"),
        (base64.b64encode(b"short").decode(), "holds 5 bytes"),
        (base64.b64encode(bytes(64)).decode(), "holds 64 bytes"),
    ],
)
def test_bad_environment_keys(tmp_path: Path, value: str, says: str) -> None:
    with pytest.raises(SecretKeyError, match=says) as caught:
        load_or_create_key(tmp_path, {ENV_VAR: value})
    assert "openssl rand -base64 32" in str(caught.value)
    assert value not in str(caught.value)  # a key, even a broken one, is not echoed


def test_embedded_mode_creates_a_private_key_file_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    key = load_or_create_key(data_dir, {})
    path = data_dir / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(key) == 32
    assert load_or_create_key(data_dir, {}) == key
    assert [entry.name for entry in data_dir.iterdir()] == [KEY_FILE]


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    load_or_create_key(tmp_path, {})
    os.chmod(tmp_path / KEY_FILE, 0o644)
    with pytest.raises(SecretKeyError, match="chmod 600"):
        load_or_create_key(tmp_path, {})


def test_scale_out_mode_requires_the_variable(tmp_path: Path) -> None:
    with pytest.raises(SecretKeyError, match=ENV_VAR):
        load_or_create_key(tmp_path, {}, create=False)
    assert not (tmp_path / KEY_FILE).exists()


def test_values_sealed_with_a_created_key_open_after_a_restart(tmp_path: Path) -> None:
    token = SecretBox(load_or_create_key(tmp_path, {})).encrypt("survives")
    assert SecretBox(load_or_create_key(tmp_path, {})).decrypt(token) == "survives"
