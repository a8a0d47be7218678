"""Options shared by commands that open the stores: each reads `STELLWERK_<FLAG>` too."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import click

from stellwerk.config import ConfigError, Settings, env_of, flag_of, load_settings

F = TypeVar("F", bound=Callable[..., Any])


def setting_option(name: str, help: str, **kwargs: Any) -> Callable[[F], F]:
    """A flag for the setting `name`; values stay text until `load_settings` checks them."""
    return click.option(
        flag_of(name),
        name,
        envvar=env_of(name),
        show_envvar=True,
        default=None,
        help=help,
        **kwargs,
    )


def switch_option(name: str, help: str) -> Callable[[F], F]:
    """A flag without a value (`--allow-private-targets`) for the boolean setting `name`.

    Its environment variable is read here, as text, rather than by click, whose own reading of
    boolean variables takes other spellings (and, for flags, turns an unknown one into "off"):
    `load_settings` accepts exactly the spellings of `config.TRUE_WORDS` and `FALSE_WORDS` and
    refuses the rest, naming the variable.
    """
    env = env_of(name)

    def from_flag_or_env(_ctx: click.Context, _param: click.Parameter, given: bool | None) -> Any:
        return True if given else os.environ.get(env) or None

    return click.option(
        flag_of(name),
        name,
        is_flag=True,
        default=None,
        callback=from_flag_or_env,
        help=f"{help}  [env var: {env}=true|false]",
    )


def store_options(f: F) -> F:
    f = setting_option("data_dir", "Data directory of the embedded stores.")(f)
    return setting_option("database_url", "Control plane database (postgresql+asyncpg://...).")(f)


def settings_from(values: dict[str, Any]) -> Settings:
    """Settings from a command's option values; a bad value is a usage error naming it."""
    try:
        return load_settings({k: v for k, v in values.items() if k in _SETTING_NAMES})
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


_SETTING_NAMES = frozenset(Settings.__dataclass_fields__)
