"""The EventBridge API at work in one process: the facades it calls, the signature verifier
with its derived keys, and its metrics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from prometheus_client import Histogram

from stellwerk.auth import Principal
from stellwerk.awsapi.errors import AwsError
from stellwerk.awsapi.sigv4 import Verifier
from stellwerk.awsapi.store import AwsStore
from stellwerk.awsapi.tables import VERSION_TABLE
from stellwerk.capability import CapabilityContext, Duty, Role
from stellwerk.service import Platform, Unauthorized

NAME: Final = "eventbridge-api"


MIGRATIONS: Final = Path(__file__).parent / "migrations"
# PutEvents' 256 KiB of entries, written as JSON with room for escapes and the other fields.
MAX_BODY: Final = 1024 * 1024


class AwsApiOpened:
    def __init__(self, context: CapabilityContext) -> None:
        self.platform: Platform = context.platform
        self.store = AwsStore(context.database.engine)
        self.verifier = Verifier()
        self.facades = context.facades  # the sites capability's global endpoints
        self.site = context.settings.site  # the region of calls signed for a region set
        self.scheme = "http" if context.settings.tls_cert is None else "https"
        # The server's own limit too, should an operator have set it lower.
        self.max_body = min(MAX_BODY, context.settings.max_body_bytes)
        self._seconds = Histogram(
            "stellwerk_aws_api_seconds",
            "Time to answer an EventBridge API call (signature checked), by operation",
            ["operation"],
            registry=context.metrics.registry,
        )
        self._series: dict[str, Histogram] = {}

    async def signing_key(self, key_id: str) -> tuple[Principal, str]:
        try:
            return await self.platform.gate.authenticator.signing_key(key_id)
        except Unauthorized as exc:
            raise AwsError(
                "UnrecognizedClientException",
                f"The security token included in the request is invalid: {exc.message}",
            ) from None

    def observe(self, operation: str, seconds: float) -> None:
        series = self._series.get(operation)
        if series is None:  # the operation's series, looked up once (operations are few)
            series = self._series[operation] = self._seconds.labels(operation)
        series.observe(seconds)

    def duties(self) -> Mapping[Role, Sequence[Duty]]:
        return {}

    async def close(self) -> None:
        return None


async def open_aws_api(context: CapabilityContext) -> AwsApiOpened:
    await context.database.migrate(MIGRATIONS, version_table=VERSION_TABLE)
    return AwsApiOpened(context)
