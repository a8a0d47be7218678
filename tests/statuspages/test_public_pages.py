"""The public HTML pages over the whole app (SQLite and PostgreSQL): the page with its banner,
groups and uptime bars, the history, an HTML 404, custom domains, and escaping of all that an
admin or an incident's author writes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from tests.conftest import RunningApp
from tests.polling import eventually

from stellwerk.statuspages import StatusPagesOpened
from stellwerk.statuspages.domains import Domains
from stellwerk.statuspages.model import (
    AffectedComponent,
    Branding,
    ComponentStatus,
    Impact,
    Incident,
    IncidentStatus,
    IncidentUpdate,
    Page,
    Visibility,
)
from stellwerk.statuspages.render import percent, render_incident

HOSTILE = '<script>alert("x")</script>'


@pytest.fixture
def app(running_app: RunningApp) -> RunningApp:
    """The running app with a render budget no loaded test machine exceeds: these tests read
    whole pages (the skeleton has its own tests)."""
    opened_of(running_app).cache.render_budget = 60.0
    return running_app


async def text_of(app: RunningApp, path: str) -> str:
    return (await app.client.get(path)).text


def opened_of(app: RunningApp) -> StatusPagesOpened:
    opened = app.services.capabilities["status-pages"]
    assert isinstance(opened, StatusPagesOpened)
    return opened


def domains_of(app: RunningApp) -> Domains:
    opened = app.services.capabilities["status-pages"]
    assert isinstance(opened, StatusPagesOpened)
    return opened.domains


async def make_page(app: RunningApp, name: str = "acme", **extra: object) -> None:
    body = {"title": "Acme status", "description": "How Acme is doing", **extra}
    made = await app.client.put(f"/v1/status-pages/{name}", headers=app.admin, json=body)
    assert made.status_code in (200, 201), made.text


async def put_component(app: RunningApp, page: str, component: str, **body: object) -> None:
    made = await app.client.put(
        f"/v1/status-pages/{page}/components/{component}", headers=app.admin, json=body
    )
    assert made.status_code in (200, 201), made.text


async def test_a_page_shows_its_banner_groups_components_and_uptime_without_javascript(
    app: RunningApp,
) -> None:
    await make_page(
        app, branding={"accent_color": "#0055ff", "logo_url": "https://acme.example/l.png"}
    )
    await put_component(app, "acme", "api", name="API", group="Core", position=1)
    await put_component(app, "acme", "db", name="Database", group="Core", position=2)
    await put_component(app, "acme", "cdn", name="CDN", group="Edge", status="partial_outage")
    await put_component(app, "acme", "mail", name="Mail", only_show_if_degraded=True)

    answer = await app.client.get("/status/acme")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    html = answer.text
    assert '<html lang="en">' in html
    assert '<main id="main"' in html
    assert "<header" in html
    assert "<footer" in html
    assert "<script" not in html  # nothing needs JavaScript to be read
    assert "Partial System Outage" in html  # the banner: the worst component's status
    assert "<h3>Core</h3>" in html
    assert "<h3>Edge</h3>" in html
    assert html.index("API") < html.index("Database")
    assert "Partial outage" in html
    assert "Operational" in html
    assert "Mail" not in html  # only shown when degraded, and it is operational
    assert "100.00 % uptime over 90 days" in html
    assert "no data" in html  # the days before the components existed
    assert "--accent: #0055ff" in html
    assert '<img class="logo" src="https://acme.example/l.png"' in html
    assert 'href="/status/acme/history"' in html

    await put_component(
        app, "acme", "mail", name="Mail", only_show_if_degraded=True, status="major_outage"
    )
    # The cached page is served until its refresh, within a second, shows the change.
    html = await eventually(
        lambda: text_of(app, "/status/acme"), accept=lambda h: "Mail" in h, within=5
    )
    assert "Mail" in html
    assert "Major System Outage" in html

    history = await app.client.get("/status/acme/history")
    assert history.status_code == 200
    assert "No incidents in the last 90 days." in history.text


async def test_what_an_admin_writes_is_escaped(app: RunningApp) -> None:
    await make_page(app, "evil", title=HOSTILE, description=HOSTILE)
    await put_component(app, "evil", "api", name=HOSTILE, group=HOSTILE, description=HOSTILE)
    html = (await app.client.get("/status/evil")).text
    assert HOSTILE not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html


async def test_an_unknown_page_or_incident_is_an_html_404(app: RunningApp) -> None:
    for path in ("/status/nosuchpage", "/status/nosuchpage/history", "/status/nosuch/incidents/x"):
        answer = await app.client.get(path)
        assert answer.status_code == 404, path
        assert answer.headers["content-type"].startswith("text/html")
        assert "Status page not found" in answer.text
    await make_page(app)
    assert (await app.client.get("/status/acme/incidents/nosuchincident")).status_code == 404


async def test_a_private_page_is_not_shown_publicly(app: RunningApp) -> None:
    await make_page(app, "inside", visibility="private")
    answer = await app.client.get("/status/inside")
    assert answer.status_code == 303  # to its login form (tests/statuspages/test_access.py)
    assert answer.headers["location"].startswith("/status/inside/login")
    assert "Inside" not in answer.text


async def test_a_custom_domain_serves_its_page_at_the_root(app: RunningApp) -> None:
    await make_page(app, domains=["status.acme.example"])
    await put_component(app, "acme", "api", name="API")
    await domains_of(app).load()

    for host in ("status.acme.example", "STATUS.Acme.Example:8443"):
        answer = await app.client.get("/", headers={"Host": host})
        assert answer.status_code == 200, (host, answer.text)
        assert "All Systems Operational" in answer.text
        assert 'href="/history"' in answer.text  # links stay on the domain
        assert "/status/acme" not in answer.text
    history = await app.client.get("/history", headers={"Host": "status.acme.example"})
    assert history.status_code == 200
    assert "Incident history" in history.text
    missing = await app.client.get("/nothing-here", headers={"Host": "status.acme.example"})
    assert missing.status_code == 404
    assert "Status page not found" in missing.text

    # Any other host: the root is no page, and the API answers as ever on every host.
    assert (await app.client.get("/")).status_code == 404
    assert (await app.client.get("/", headers={"Host": "other.example"})).status_code == 404
    api = await app.client.get(
        "/v1/status-pages/acme", headers={**app.admin, "Host": "status.acme.example"}
    )
    assert api.status_code == 200
    assert api.json()["name"] == "acme"


async def test_a_domain_added_later_answers_without_a_restart(app: RunningApp) -> None:
    await make_page(app)
    assert (await app.client.get("/status/acme")).status_code == 200  # followed from now on
    assert (await app.client.get("/", headers={"Host": "status.acme.example"})).status_code == 404
    await make_page(app, domains=["status.acme.example"])

    async def at_root() -> int:
        return (await app.client.get("/", headers={"Host": "status.acme.example"})).status_code

    await eventually(at_root, accept=lambda code: code == 200, within=3)


def test_an_incident_s_markdown_is_rendered_and_its_html_escaped() -> None:
    now = datetime(2026, 5, 4, 12, tzinfo=UTC)
    page = Page("acme", "Acme", "", "Europe/Berlin", [], Visibility.PUBLIC, Branding(), now, now)
    update = IncidentUpdate(
        "u1",
        IncidentStatus.INVESTIGATING,
        f"**Slow** API. {HOSTILE} [link](javascript:alert(1)) <b>x</b>",
        now,
        [AffectedComponent("api", ComponentStatus.PARTIAL_OUTAGE)],
    )
    incident = Incident(
        "inc1", "acme", f"API {HOSTILE}", IncidentStatus.INVESTIGATING, Impact.MAJOR,
        now, now, None, None, None, ["api"], [update],
    )  # fmt: skip
    html = render_incident(page, incident, base="/status/acme", names={"api": "API"}).decode()
    assert "<strong>Slow</strong>" in html
    assert "<script" not in html
    assert "<b>x</b>" not in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html
    assert 'href="javascript' not in html
    assert "4 May 2026, 14:00 CEST" in html  # in the page's time zone
    assert "API: partial outage" in html


def test_uptime_is_never_rounded_up_to_a_hundred_percent() -> None:
    assert percent(0.99999) == "99.99 %"
    assert percent(1.0) == "100.00 %"
    assert percent(0.0) == "0.00 %"
