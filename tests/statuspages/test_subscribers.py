"""Subscribers over the whole app (SQLite and PostgreSQL), with a real SMTP server (aiosmtpd)
and a real HTTP receiver on loopback: double opt-in, notices from status events, one-click
unsubscribe, webhooks delivered and signed by Stellwerk's own delivery, and every refusal."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from standardwebhooks import Webhook
from tests.conftest import RunningApp, app_running, free_port
from tests.polling import eventually

from stellwerk.config import load_settings
from stellwerk.statuspages import StatusPagesOpened
from stellwerk.statuspages.events import INTERNAL_BUS
from stellwerk.statuspages.notices import Mailer

# The test's SMTP server takes AUTH on plain TCP on loopback, which aiosmtpd rightly warns of.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

SMTP_USER, SMTP_PASSWORD = "stellwerk", "mail secret"


def smtp_url(port: int) -> str:
    return f"smtp://{SMTP_USER}:{SMTP_PASSWORD.replace(' ', '%20')}@127.0.0.1:{port}"


class Inbox:
    """What the SMTP server took, as parsed mails (it runs in a thread of its own)."""

    def __init__(self) -> None:
        self._mails: list[EmailMessage] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        content = envelope.content
        assert isinstance(content, bytes)
        mail = message_from_bytes(content, policy=policy.default)
        assert isinstance(mail, EmailMessage)
        with self._lock:
            self._mails.append(mail)
        return "250 OK"

    def mails(self, to: str | None = None) -> list[EmailMessage]:
        with self._lock:
            return [m for m in self._mails if to is None or m["To"] == to]

    async def wait_for(self, to: str, subject: str) -> EmailMessage:
        def found() -> EmailMessage | None:
            return next((m for m in self.mails(to) if subject in m["Subject"]), None)

        mail = await eventually(
            found,
            what=f"a mail to {to} about {subject!r} (got {[m['Subject'] for m in self.mails()]})",
        )
        assert mail is not None
        return mail


def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        SMTP_USER.encode(),
        SMTP_PASSWORD.encode(),
    )
    return AuthResult(success=ok)


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    box = Inbox()
    port = free_port()
    controller = Controller(
        box,
        hostname="127.0.0.1",
        port=port,
        authenticator=authenticate,
        auth_required=True,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


@pytest.fixture
async def app(
    tmp_path: Path, database_url: str, inbox: tuple[Inbox, int]
) -> AsyncIterator[RunningApp]:
    settings = load_settings(
        {
            "data_dir": str(tmp_path / "data"),
            "database_url": database_url,
            "smtp_url": smtp_url(inbox[1]),
            "smtp_from": "Acme Status <status@acme.example>",
            "allow_private_targets": "true",
        }
    )
    async with app_running(settings) as running:
        yield running


@dataclass
class Receiver:
    url: str
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    def bodies(self) -> list[dict[str, Any]]:
        return [msgspec.json.decode(body) for _, body in self.received]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    port = free_port()
    found = Receiver(f"http://127.0.0.1:{port}/hook")

    async def handle(request: web.Request) -> web.Response:
        found.received.append(
            ({k.lower(): v for k, v in request.headers.items()}, await request.read())
        )
        return web.Response(status=204)

    server = web.Application()
    server.router.add_post("/hook", handle)
    runner = web.AppRunner(server, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield found
    finally:
        await runner.cleanup()


async def make_page(app: RunningApp, name: str = "acme", visibility: str = "public") -> None:
    made = await app.client.put(
        f"/v1/status-pages/{name}",
        headers=app.admin,
        json={"title": "Acme status", "visibility": visibility},
    )
    assert made.status_code in (200, 201), made.text
    for component in ("api", "db"):
        added = await app.client.put(
            f"/v1/status-pages/{name}/components/{component}", headers=app.admin
        )
        assert added.status_code in (200, 201), added.text


async def incident(app: RunningApp, name: str, *components: str, page: str = "acme") -> str:
    """Open an incident through the admin API (it publishes `status.incident.created`); its id."""
    opened = await app.client.post(
        f"/v1/status-pages/{page}/incidents",
        headers=app.admin,
        json={
            "name": name,
            "impact": "major",
            "body": f"We look into {name}.",
            "components": [{"component": c, "status": "major_outage"} for c in components],
        },
    )
    assert opened.status_code == 201, opened.text
    id_: str = opened.json()["id"]
    return id_


async def subscribers(app: RunningApp) -> list[dict[str, Any]]:
    listed = await app.client.get("/v1/status-pages/acme/subscribers", headers=app.admin)
    assert listed.status_code == 200, listed.text
    found: list[dict[str, Any]] = listed.json()["subscribers"]
    return found


def link_in(mail: EmailMessage, path: str) -> str:
    body = mail.get_body(("plain",))
    assert body is not None
    found = re.search(rf"http://stellwerk(/status/[^/]+/{path}\?token=\S+)", body.get_content())
    assert found is not None, body.get_content()
    return found.group(1)


async def test_an_address_gets_notices_only_once_it_confirmed_and_until_it_unsubscribes(
    app: RunningApp, inbox: tuple[Inbox, int]
) -> None:
    box, _ = inbox
    await make_page(app)
    subscribed = await app.client.post(
        "/status/acme/subscribe", json={"email": "Ann@Example.com", "components": ["api"]}
    )
    assert subscribed.status_code == 202, subscribed.text
    assert subscribed.json() == {"kind": "email", "status": "confirmation_sent"}
    asked = await box.wait_for("ann@example.com", "Confirm your subscription to Acme status")
    assert asked["From"] == "Acme Status <status@acme.example>"
    confirm = link_in(asked, "subscribe/confirm")

    # Asking again sends no second confirmation within ten minutes, and says the same.
    again = await app.client.post("/status/acme/subscribe", json={"email": "ann@example.com"})
    assert again.json() == {"kind": "email", "status": "confirmation_sent"}

    await incident(app, "Before confirming", "api")  # not for her: she had not confirmed
    button = await app.client.get(confirm)
    assert button.status_code == 200
    assert "Confirm" in button.text  # a button: a scanner opening the link confirms nothing
    listed = (await app.client.get("/v1/status-pages/acme/subscribers", headers=app.admin)).json()
    assert [s["confirmed"] for s in listed["subscribers"]] == [False]
    token = confirm.split("token=", 1)[1]
    confirmed = await app.client.post(confirm.split("?")[0], data={"token": token})
    assert confirmed.status_code == 200, confirmed.text
    assert "You are subscribed" in confirmed.text
    (shown,) = (
        await app.client.get("/v1/status-pages/acme/subscribers", headers=app.admin)
    ).json()["subscribers"]
    assert shown["confirmed"] is True
    assert shown["address"] == "ann@example.com"
    assert shown["components"] == ["api"]

    await incident(app, "Only the database", "db")  # not one of hers
    api_errors = await incident(app, "API errors", "api")
    notice = await box.wait_for("ann@example.com", "API errors")
    assert notice["Subject"] == "[Acme status] Investigating: API errors"
    assert notice["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe = link_in(notice, "unsubscribe")
    assert notice["List-Unsubscribe"] == f"<http://stellwerk{unsubscribe}>"
    text = notice.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "We look into API errors." in text
    assert f"http://stellwerk/status/acme/incidents/{api_errors}" in text
    subjects = [m["Subject"] for m in box.mails("ann@example.com")]
    assert not any("Before confirming" in s or "Only the database" in s for s in subjects)

    # A mail program's one-click unsubscribe (RFC 8058): a POST to the link.
    gone = await app.client.post(
        unsubscribe,
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert gone.status_code == 200, gone.text
    assert "Unsubscribed" in gone.text
    listed = (await app.client.get("/v1/status-pages/acme/subscribers", headers=app.admin)).json()
    assert listed["subscribers"] == []
    reused = await app.client.post(unsubscribe)
    assert reused.status_code == 404


async def test_the_form_subscribes_without_javascript(
    app: RunningApp, inbox: tuple[Inbox, int]
) -> None:
    box, _ = inbox
    await make_page(app)
    form = await app.client.get("/status/acme/subscribe")
    assert form.status_code == 200
    assert 'name="components" value="api"' in form.text
    assert "no-store" in form.headers["cache-control"]
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token is not None
    sent = await app.client.post(
        "/status/acme/subscribe",
        data={"csrf": token.group(1), "email": "bob@example.com", "components": ["db"]},
    )
    assert sent.status_code == 202, sent.text
    assert "Check your inbox" in sent.text
    await box.wait_for("bob@example.com", "Confirm your subscription")
    forged = await app.client.post("/status/acme/subscribe", data={"email": "eve@example.com"})
    assert forged.status_code == 403
    token = re.search(r'name="csrf" value="([^"]+)"', forged.text)  # the form again, anew
    assert token is not None
    wrong = await app.client.post(
        "/status/acme/subscribe",
        data={"csrf": token.group(1), "email": "not an address"},
    )
    assert wrong.status_code == 422
    assert "is not an email address" in wrong.text


async def test_a_webhook_subscriber_gets_signed_deliveries_of_its_components(
    app: RunningApp, receiver: Receiver
) -> None:
    await make_page(app)
    made = await app.client.post(
        "/status/acme/subscribe", json={"webhook": receiver.url, "components": ["api"]}
    )
    assert made.status_code == 201, made.text
    answer = made.json()
    assert answer["status"] == "active"
    secret = answer["signing_secret"]
    assert secret.startswith("whsec_")
    (shown,) = (
        await app.client.get("/v1/status-pages/acme/subscribers", headers=app.admin)
    ).json()["subscribers"]
    rule = shown["rule"]
    assert shown["kind"] == "webhook"
    assert shown["components"] == ["api"]
    # It is a rule on the internal bus like any other, with Stellwerk's delivery behind it.
    seen = await app.client.get(f"/v1/buses/{INTERNAL_BUS}/rules/{rule}", headers=app.admin)
    assert seen.status_code == 200
    assert seen.json()["targets"][0]["url"] == receiver.url

    await incident(app, "Database slow", "db")  # sets db's status too: neither is for it
    await incident(app, "API down", "api")  # an incident and api's new status
    await eventually(lambda: len(receiver.received) >= 2, what="two deliveries")
    bodies = receiver.bodies()
    assert sorted(b["type"] for b in bodies) == [
        "status.component.updated",
        "status.incident.created",
    ]
    (created,) = [b for b in bodies if b["type"] == "status.incident.created"]
    assert created["data"]["incident"]["name"] == "API down"
    (updated,) = [b for b in bodies if b["type"] == "status.component.updated"]
    assert updated["data"]["component"]["id"] == "api"
    for headers, body in receiver.received:
        Webhook(secret).verify(body, headers)  # raises unless Stellwerk signed it

    deleted = await app.client.delete(
        f"/v1/status-pages/acme/subscribers/{answer['id']}", headers=app.admin
    )
    assert deleted.status_code == 204
    gone = await app.client.get(f"/v1/buses/{INTERNAL_BUS}/rules/{rule}", headers=app.admin)
    assert gone.status_code == 404


async def test_a_webhook_that_chose_components_hears_of_page_wide_incidents(
    app: RunningApp, receiver: Receiver
) -> None:
    await make_page(app)
    made = await app.client.post(
        "/status/acme/subscribe", json={"webhook": receiver.url, "components": ["api"]}
    )
    assert made.status_code == 201, made.text

    await incident(app, "Database slow", "db")  # neither the incident nor db's status is for it
    wide = await incident(app, "Everything is slow")  # touches no component: concerns everyone
    await eventually(lambda: len(receiver.received) >= 1, what="a delivery")
    (delivered,) = receiver.bodies()
    assert delivered["type"] == "status.incident.created"
    assert delivered["data"]["incident"]["id"] == wide
    assert delivered["data"]["incident"]["components"] == []


async def test_an_audience_subscribes_to_its_own_components_only(app: RunningApp) -> None:
    await make_page(app, visibility="audience")
    await app.client.put(
        "/v1/status-pages/acme/audiences/partners",
        headers=app.admin,
        json={"components": ["api"], "password": "partners pass"},
    )
    refused = await app.client.post("/status/acme/subscribe", json={"email": "a@example.com"})
    assert refused.status_code == 401
    assert refused.json()["error"] == "LoginRequired"
    assert (await app.client.get("/status/acme/subscribe")).status_code == 303

    form = await app.client.get("/status/acme/login")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token is not None
    logged_in = await app.client.post(
        "/status/acme/login",
        data={"csrf": token.group(1), "audience": "partners", "password": "partners pass"},
    )
    assert logged_in.status_code == 303
    page = await app.client.get("/status/acme/subscribe")
    assert 'value="api"' in page.text
    assert 'value="db"' not in page.text
    hidden = await app.client.post(
        "/status/acme/subscribe", json={"email": "p@example.com", "components": ["db"]}
    )
    assert hidden.status_code == 422
    assert hidden.json()["field"] == "$.components[0]"
    ok = await app.client.post("/status/acme/subscribe", json={"email": "p@example.com"})
    assert ok.status_code == 202
    (shown,) = (
        await app.client.get("/v1/status-pages/acme/subscribers", headers=app.admin)
    ).json()["subscribers"]
    assert shown["audience"] == "partners"
    assert shown["components"] == ["api"]


async def test_a_private_page_subscribes_on_its_custom_domain(
    app: RunningApp, inbox: tuple[Inbox, int]
) -> None:
    box, _ = inbox
    made = await app.client.put(
        "/v1/status-pages/acme",
        headers=app.admin,
        json={"title": "Acme status", "visibility": "private", "domains": ["status.acme.example"]},
    )
    assert made.status_code == 201, made.text
    await app.client.put("/v1/status-pages/acme/components/api", headers=app.admin)
    await app.client.put(
        "/v1/status-pages/acme/access", headers=app.admin, json={"password": "acme password"}
    )
    opened = app.services.capabilities["status-pages"]
    assert isinstance(opened, StatusPagesOpened)
    await opened.domains.load()

    async with httpx.AsyncClient(
        transport=app.client._transport, base_url="http://status.acme.example"
    ) as browser:
        refused = await browser.post("/subscribe", json={"email": "a@example.com"})
        assert refused.status_code == 401
        sent_away = await browser.get("/subscribe")
        assert sent_away.headers["location"] == "/login?next=/subscribe"
        form = await browser.get("/login")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert token is not None
        logged_in = await browser.post(
            "/login",
            data={"csrf": token.group(1), "password": "acme password", "next": "/subscribe"},
        )
        assert logged_in.headers["location"] == "/subscribe"

        form = await browser.get("/subscribe")
        assert form.status_code == 200
        assert 'action="/subscribe"' in form.text
        token = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert token is not None
        sent = await browser.post(
            "/subscribe",
            data={"csrf": token.group(1), "email": "dora@example.com", "components": ["api"]},
        )
        assert sent.status_code == 202, sent.text
        assert "Check your inbox" in sent.text
        assert '<a href="/">' in sent.text  # back to the domain's root

        # The mail's links lead to the domain it was asked on (its /status/acme/... addresses
        # are served on every host).
        asked = await box.wait_for("dora@example.com", "Confirm your subscription")
        text = asked.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        link = re.search(
            r"http://status\.acme\.example(/status/acme/subscribe/confirm)\?token=(\S+)", text
        )
        assert link is not None, text
        confirmed = await browser.post(link.group(1), data={"token": link.group(2)})
        assert confirmed.status_code == 200, confirmed.text
        assert "You are subscribed" in confirmed.text
    (shown,) = await subscribers(app)
    assert shown["confirmed"] is True
    assert shown["components"] == ["api"]


async def test_bad_input_is_refused_naming_the_field(app: RunningApp) -> None:
    await make_page(app)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"email": "nope"}, "$.email"),
        ({"email": "a@example.com\nBcc: x@y.z"}, "$.email"),
        ({}, "$.email"),
        ({"email": "a@example.com", "webhook": "https://hooks.example/x"}, "$.email"),
        ({"email": "a@example.com", "components": ["ghost"]}, "$.components[0]"),
        ({"webhook": "ftp://hooks.example/x"}, "$.webhook"),
        ({"email": "a@example.com", "extra": 1}, ""),  # "unknown field `extra`"
    ]
    for body, where in cases:
        refused = await app.client.post("/status/acme/subscribe", json=body)
        assert refused.status_code == 422, (body, refused.text)
        assert refused.json().get("field", "").startswith(where), (body, refused.json())
    assert (await app.client.post("/status/ghost/subscribe", json={})).status_code == 404
    for path in ("subscribe/confirm", "unsubscribe"):
        bad = await app.client.post(f"/status/acme/{path}?token=forged.token")
        assert bad.status_code == 400
        assert "not valid" in bad.text
    missing = await app.client.get("/v1/status-pages/acme/subscribers/nope", headers=app.admin)
    assert missing.status_code == 404


async def test_without_smtp_email_is_refused_and_webhooks_keep_to_the_ssrf_guard(
    running_app: RunningApp,
) -> None:
    app = running_app
    await make_page(app)
    mail = await app.client.post("/status/acme/subscribe", json={"email": "a@example.com"})
    assert mail.status_code == 422
    assert "--smtp-url" in mail.json()["message"]
    local = await app.client.post(
        "/status/acme/subscribe", json={"webhook": "http://127.0.0.1:9/hook"}
    )
    assert local.status_code == 422
    assert local.json()["field"] == "$.webhook"
    form = await app.client.get("/status/acme/subscribe")
    assert "This server sends no mail" in form.text


async def test_a_deleted_page_takes_its_subscribers_and_their_rules_along(
    app: RunningApp, receiver: Receiver
) -> None:
    await make_page(app)
    made = (await app.client.post("/status/acme/subscribe", json={"webhook": receiver.url})).json()
    opened = app.services.capabilities["status-pages"]
    assert isinstance(opened, StatusPagesOpened)
    assert (await app.client.delete("/v1/status-pages/acme", headers=app.admin)).status_code == 204
    rules = (await app.client.get(f"/v1/buses/{INTERNAL_BUS}/rules", headers=app.admin)).json()
    assert rules["rules"] == []
    await make_page(app)
    listed = (await app.client.get("/v1/status-pages/acme/subscribers", headers=app.admin)).json()
    assert listed["subscribers"] == []
    assert made["id"]


async def test_mails_survive_a_restart_and_are_not_sent_twice(
    tmp_path: Path, database_url: str, inbox: tuple[Inbox, int]
) -> None:
    box, port = inbox
    settings = load_settings(
        {
            "data_dir": str(tmp_path / "data"),
            "database_url": database_url,
            "smtp_url": smtp_url(port),
        }
    )
    async with app_running(settings) as app:
        await make_page(app)
        await app.client.post("/status/acme/subscribe", json={"email": "cy@example.com"})
        confirm = link_in(await box.wait_for("cy@example.com", "Confirm"), "subscribe/confirm")
        await app.client.post(confirm)
        await incident(app, "First", "api")
        await box.wait_for("cy@example.com", "First")
        # Stopped at once: "Second" may be read, queued or sent, or none of them yet.
        await incident(app, "Second", "db")
    async with app_running(settings) as app:
        await incident(app, "Third", "api")
        await box.wait_for("cy@example.com", "Second")
        await box.wait_for("cy@example.com", "Third")
    subjects = [m["Subject"] for m in box.mails("cy@example.com")]
    for each in ("Confirm", "First", "Second", "Third"):
        assert len([s for s in subjects if each in s]) == 1, subjects


class HeldInbox(Inbox):
    """Takes each mail's DATA, then holds its answer until `release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.took = threading.Event()
        self.release = threading.Event()

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        answer = await super().handle_DATA(server, session, envelope)
        self.took.set()
        await asyncio.to_thread(self.release.wait, 30)  # set from the test's thread
        return answer


async def test_a_stop_while_a_mail_is_on_the_wire_finishes_and_records_it() -> None:
    """Cancelling the sender between the server taking a mail and its answer must not lose the
    answer: the mail would stay unsent in the outbox and go out again after a restart."""
    box = HeldInbox()
    port = free_port()
    controller = Controller(
        box,
        hostname="127.0.0.1",
        port=port,
        authenticator=authenticate,
        auth_required=True,
        auth_require_tls=False,
    )
    controller.start()
    try:
        mailer = Mailer(smtp_url(port), "status@acme.example")
        recorded: list[tuple[int, Exception | None]] = []

        async def record(index: int, error: Exception | None) -> None:
            recorded.append((index, error))

        messages = []
        for subject in ("One", "Two"):
            message = EmailMessage()
            message["From"], message["To"], message["Subject"] = (
                "status@acme.example",
                "cy@example.com",
                subject,
            )
            message.set_content(subject)
            messages.append(message)
        sending = asyncio.create_task(mailer.send(messages, record))
        assert await asyncio.to_thread(box.took.wait, 30)
        sending.cancel()
        await asyncio.sleep(0)  # the cancellation reaches the sender while the server holds
        assert not sending.done()
        box.release.set()
        with pytest.raises(asyncio.CancelledError):
            await sending
        assert recorded == [(0, None)]  # "One" is recorded as sent; "Two" never started
        assert [m["Subject"] for m in box.mails()] == ["One"]
    finally:
        box.release.set()
        controller.stop()
