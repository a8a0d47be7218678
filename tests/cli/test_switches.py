"""Switch flags (`--allow-private-targets`) and their environment variables, as `serve` reads them.

The variable is parsed by `config`, not by click: one set of spellings, and a value outside it
is refused before anything starts instead of being read as "off".
"""

from __future__ import annotations

import pytest

from stellwerk.cli import serve as serve_command
from stellwerk.cli.main import main
from stellwerk.config import Settings

ENV = "STELLWERK_ALLOW_PRIVATE_TARGETS"


def settings_of_serve(monkeypatch: pytest.MonkeyPatch, *args: str) -> Settings:
    started: list[Settings] = []
    monkeypatch.setattr(serve_command, "run", lambda settings, _values: started.append(settings))
    monkeypatch.setattr(serve_command, "configure_logging", lambda *a, **k: None)
    assert main(["serve", *args]) == 0
    assert len(started) == 1
    return started[0]


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("ON", True), ("0", False)])
def test_the_environment_variable_sets_the_switch(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: bool
) -> None:
    monkeypatch.setenv(ENV, value)
    assert settings_of_serve(monkeypatch).allow_private_targets is expected


def test_the_flag_turns_it_on_whatever_the_variable_says(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "false")
    assert settings_of_serve(monkeypatch, "--allow-private-targets").allow_private_targets


def test_without_flag_or_variable_the_switch_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert not settings_of_serve(monkeypatch).allow_private_targets


@pytest.mark.parametrize("value", ["t", "maybe"])
def test_an_unknown_spelling_stops_the_start_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    monkeypatch.setenv(ENV, value)
    monkeypatch.setattr(serve_command, "run", lambda *_: pytest.fail("it started"))
    assert main(["serve"]) == 2
    error = capsys.readouterr().err
    assert f"{ENV}): {value!r} is not a switch value" in error
