"""`stellwerk receive`: a webhook receiver for trying rules out on one machine.

It listens on a port, checks each request's Standard Webhooks signature with the target's
secret (with the `standardwebhooks` library, as a real receiver would), prints one line per
request and answers 204, or 401 when the signature does not verify (a 4xx other than 429: the
delivery goes to the dead-letter queue at once). With `--count` it exits 0 once that many
webhooks verified, or 1 when `--timeout` passes first, so scripts and the README can wait on it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import click
from aiohttp import web
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from stellwerk.delivery.targets import parse_secret
from stellwerk.rules import TargetConfigError


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=9000, show_default=True)
@click.option(
    "--secret",
    required=True,
    envvar="STELLWERK_RECEIVE_SECRET",
    show_envvar=True,
    help="The target's signing secret (whsec_...), as the rule shows it to admin keys.",
)
@click.option(
    "--count", type=click.IntRange(1), default=None, help="Exit 0 after this many verified."
)
@click.option(
    "--timeout",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="With --count: exit 1 if they have not all arrived after this many seconds.",
)
def receive(host: str, port: int, secret: str, count: int | None, timeout: float | None) -> None:
    """Receive webhooks, verify their signatures and print them (Ctrl-C stops)."""
    try:
        parse_secret(secret)
    except TargetConfigError as exc:
        raise click.BadParameter(exc.reason, param_hint="--secret") from None
    webhook = Webhook(secret)

    async def until_done() -> int:
        async with _listening(webhook, host, port, count) as receiver:
            if count is None:
                await asyncio.Event().wait()  # until Ctrl-C or SIGTERM
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await receiver.enough.wait()
            return receiver.verified

    with contextlib.suppress(KeyboardInterrupt):
        arrived = asyncio.run(until_done())
        if count is not None and arrived < count:
            raise click.ClickException(
                f"{arrived} of {count} webhooks verified within {timeout:g} s"
            )


class _Receiver:
    def __init__(self, webhook: Webhook, count: int | None) -> None:
        self.webhook = webhook
        self.count = count
        self.verified = 0
        self.enough = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        name = request.headers.get("webhook-id", "(no webhook-id)")
        try:
            self.webhook.verify(body, dict(request.headers))
        except WebhookVerificationError as exc:
            click.echo(f"rejected {name}: {exc}")
            return web.json_response({"error": str(exc)}, status=401)
        self.verified += 1
        click.echo(f"verified {name}: {body.decode(errors='replace')}")
        if self.count is not None and self.verified >= self.count:
            self.enough.set()
        return web.Response(status=204)


@contextlib.asynccontextmanager
async def _listening(
    webhook: Webhook, host: str, port: int, count: int | None
) -> AsyncIterator[_Receiver]:
    receiver = _Receiver(webhook, count)
    app = web.Application()
    app.router.add_route("POST", "/{path:.*}", receiver.handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        click.echo(f"listening on http://{host}:{port}/", err=True)
        yield receiver
    finally:
        await runner.cleanup()
