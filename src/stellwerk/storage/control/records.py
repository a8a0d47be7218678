"""What the control plane's stores share: their errors and sealed values."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from stellwerk.secrets import SecretBox
from stellwerk.storage.control.changes import ChangeFeed


class NotFoundError(LookupError):
    """The named resource does not exist for this tenant."""


class ConflictError(ValueError):
    """The change contradicts what is stored: a name taken, a limit hit, a protected resource."""


class SealedStore:
    """A store that keeps some values sealed with the process's `SecretBox`.

    Tools that never touch secrets (e.g. `tenants create`) open the control plane without a box;
    for them any use of a sealed value is a mistake, said plainly.
    """

    def __init__(
        self, changes: ChangeFeed, now: Callable[[], datetime], box: SecretBox | None
    ) -> None:
        self._changes = changes
        self._engine = changes.engine
        self._now = now
        self._box = box

    def _secrets(self) -> SecretBox:
        if self._box is None:
            raise RuntimeError(f"{type(self).__name__} needs the secret key (STELLWERK_SECRET_KEY)")
        return self._box
