"""The console over HTTP: login and its refusals, CSRF, the read-only console, escaping,
another tenant's event, an expired session, and the rule editor's "why not"."""

from __future__ import annotations

import html
from typing import Any

import httpx
import pytest
from tests.console.conftest import Receiver, Served, csrf_of
from tests.polling import wait_until

from stellwerk.console import COOKIE


def event(id_: str, **more: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "id": id_, "source": "test", "type": "order.created", **more}


def send(served: Served, *events: dict[str, Any], bus: str = "default") -> None:
    answer = served.api("POST", f"/v1/buses/{bus}/events", json=list(events))
    assert answer.status_code == 202, answer.text
    assert answer.json()["accepted"] == len(events)


def test_pages_without_a_session_redirect_to_the_login(served: Served) -> None:
    with served.browser() as client:
        answer = client.get("/console/buses/default?x=1")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/console/login?then=/console/buses/default%3Fx%3D1"
        assert client.get("/console").headers["location"] == "/console/buses"


def test_login_sets_a_strict_httponly_cookie_and_logout_clears_it(served: Served) -> None:
    with served.browser() as client:
        form = client.get("/console/login?then=/console/buses/default")
        answer = client.post(
            "/console/login",
            data={
                "key": served.bootstrap.admin_key,
                "csrf": csrf_of(form.text),
                "then": "/console/buses/default",
            },
        )
        assert answer.status_code == 303
        assert answer.headers["location"] == "/console/buses/default"
        cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith(COOKIE))
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
        assert "Path=/console" in cookie
        assert served.bootstrap.admin_key not in cookie  # sealed, not the key in the clear
        page = client.get("/console/buses")
        assert page.status_code == 200
        assert "default" in page.text
        assert "Content-Security-Policy" in page.headers
        assert page.text.count('<svg class="chart"') == 3  # ingest, deliveries, latency
        out = client.post("/console/logout", data={"csrf": csrf_of(page.text)})
        assert out.status_code == 303
        assert client.get("/console/buses").status_code == 303


def test_a_login_is_refused_for_a_bad_key_an_ingest_key_and_a_foreign_form(
    served: Served,
) -> None:
    with served.browser() as client:
        token = csrf_of(client.get("/console/login").text)
        bad = client.post("/console/login", data={"key": "swk_nope_nope", "csrf": token})
        assert bad.status_code == 401
        assert "not valid" in bad.text
        token = csrf_of(bad.text)
        ingest = client.post(
            "/console/login", data={"key": served.bootstrap.ingest_key, "csrf": token}
        )
        assert ingest.status_code == 403
        assert "ingest key cannot use the console" in ingest.text
    with served.browser() as other:  # no login cookie: a form posted from elsewhere
        foreign = other.post(
            "/console/login", data={"key": served.bootstrap.admin_key, "csrf": "made-up"}
        )
        assert foreign.status_code == 403
        assert f"{COOKIE}=" not in foreign.headers.get("set-cookie", "")


def test_a_form_without_the_sessions_csrf_token_changes_nothing(served: Served) -> None:
    with served.logged_in() as client:
        for token in (None, "forged"):
            data = {"name": "csrf-rule", "pattern": '{"type": ["x"]}', "targets": "[]"}
            if token:
                data["csrf"] = token
            refused = client.post("/console/buses/default/rules", data=data)
            assert refused.status_code == 403
            assert "CSRF" in refused.text
        assert served.api("GET", "/v1/buses/default/rules/csrf-rule").status_code == 404
        # Another session's token does not do either.
        with served.logged_in() as other:
            theirs = csrf_of(other.get("/console/buses/default").text)
        refused = client.post(
            "/console/buses/default/rules", data={**data, "csrf": theirs, "name": "csrf-rule"}
        )
        assert refused.status_code == 403


def test_a_read_key_gets_a_console_without_forms_that_change_things(served: Served) -> None:
    served.api(
        "PUT",
        "/v1/buses/default/rules/seen",
        json={"pattern": {"type": ["a"]}, "targets": [{"id": "t", "type": "log"}]},
    )
    with served.logged_in(served.key("read")) as client:
        bus = client.get("/console/buses/default")
        assert bus.status_code == 200
        assert "read-only" in bus.text
        assert "New rule" not in bus.text
        assert "Send an event" not in bus.text
        rule = client.get("/console/buses/default/rules/seen")
        assert "Save rule" not in rule.text
        assert "Delete rule" not in rule.text
        assert "Test pattern" in rule.text  # testing changes nothing
        token = csrf_of(rule.text)
        tested = client.post(
            "/console/buses/default/rules/seen/test",
            data={"csrf": token, "pattern": '{"type": ["a"]}', "event": '{"type": "a"}'},
        )
        assert tested.status_code == 200
        assert "Matches" in tested.text
        refused = client.post("/console/buses/default/rules/seen/delete", data={"csrf": token})
        assert refused.status_code == 403
        assert "read-only" in refused.text
        assert served.api("GET", "/v1/buses/default/rules/seen").status_code == 200
        assert client.get("/console/keys").status_code in (403, 404)


def test_the_pattern_editor_says_why_an_event_does_not_match(served: Served) -> None:
    with served.logged_in() as client:
        page = client.get("/console/buses/default/new-rule")
        answer = client.post(
            "/console/buses/default/test-pattern",
            data={
                "csrf": csrf_of(page.text),
                "pattern": '{"data": {"total": [{"numeric": [">", 9]}]}}',
                "event": '{"type": "order.created", "data": {"total": 7}}',
            },
        )
        assert answer.status_code == 200
        assert "Does not match" in answer.text
        assert "data.total" in answer.text
        reason = 'the event has 7, but the pattern asks for [{"numeric":[">",9]}]'
        assert reason in html.unescape(answer.text)
        broken = client.post(
            "/console/buses/default/test-pattern",
            data={"csrf": csrf_of(page.text), "pattern": '{"type": "x"}', "event": "{}"},
        )
        assert broken.status_code == 200
        assert "the pattern is not valid" in broken.text


def test_a_rule_is_created_and_edited_and_bad_input_is_named(served: Served) -> None:
    with served.logged_in() as client:
        token = csrf_of(client.get("/console/buses/default/new-rule").text)
        made = client.post(
            "/console/buses/default/rules",
            data={
                "csrf": token,
                "name": "made-here",
                "state": "enabled",
                "description": "from the console",
                "pattern": '{"type": ["order.created"]}',
                "targets": '[{"id": "audit", "type": "log"}]',
            },
        )
        assert made.status_code == 303
        assert made.headers["location"] == "/console/buses/default/rules/made-here"
        rule = served.api("GET", "/v1/buses/default/rules/made-here").json()
        assert rule["description"] == "from the console"
        edited = client.post(
            "/console/buses/default/rules/made-here",
            data={
                "csrf": token,
                "state": "disabled",
                "pattern": '{"type": ["order.created"]}',
                "targets": '[{"id": "audit", "type": "log"}]',
            },
        )
        assert edited.status_code == 303
        assert served.api("GET", "/v1/buses/default/rules/made-here").json()["state"] == "disabled"
        bad = client.post(
            "/console/buses/default/rules/made-here",
            data={"csrf": token, "pattern": '{"type": "x"}', "targets": "[]"},
        )
        assert bad.status_code == 400
        assert "pattern" in bad.text
        not_json = client.post(
            "/console/buses/default/rules",
            data={"csrf": token, "name": "x", "pattern": "{", "targets": "[]"},
        )
        assert not_json.status_code == 400
        assert "the pattern is not JSON" in not_json.text


def test_stored_markup_shows_as_text(served: Served) -> None:
    served.api(
        "PUT",
        "/v1/buses/default/rules/escaping",
        json={"pattern": {"source": ["evil"]}, "targets": [{"id": "t", "type": "log"}]},
    )
    nasty = "<script>alert(1)</script>"
    send(served, {**event("<img src=x onerror=alert(2)>"), "source": "evil", "data": {"x": nasty}})
    with served.logged_in() as client:
        bus = client.get("/console/buses/default")
        assert "<img src=x" not in bus.text
        assert "&lt;img src=x onerror=alert(2)&gt;" in bus.text

        def page() -> httpx.Response | None:
            answer = client.get(
                "/console/buses/default/events/%3Cimg%20src%3Dx%20onerror%3Dalert(2)%3E"
            )
            return answer if answer.status_code == 200 else None

        shown = wait_until(page, what="the event's page with its history")
        assert shown is not None
        assert "<script>alert(1)</script>" not in shown.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in shown.text
        assert "<img src=x" not in shown.text


def test_an_events_page_links_each_rule_to_test_it_with_the_event(served: Served) -> None:
    served.api(
        "PUT",
        "/v1/buses/default/rules/never",
        json={"pattern": {"source": ["nobody"]}, "targets": [{"id": "t", "type": "log"}]},
    )
    send(served, {**event("unmatched-1"), "source": "somebody"})
    with served.logged_in() as client:
        bus = client.get("/console/buses/default")
        link = html.unescape(bus.text).split('href="/console/buses/default/events/unmatched-1?at=')
        position = link[1].split('"')[0]
        shown = client.get(f"/console/buses/default/events/unmatched-1?at={position}")
        assert shown.status_code == 200
        assert "No rule matched this event" in shown.text
        assert f'/console/buses/default/rules/never?at={position}"' in shown.text
        rule = client.get(f"/console/buses/default/rules/never?at={position}")
        tested = client.post(
            "/console/buses/default/rules/never/test",
            data={
                "csrf": csrf_of(rule.text),
                "pattern": '{"source": ["nobody"]}',
                "event": html.unescape(
                    rule.text.split('name="event"')[1].split(">", 1)[1].split("</textarea>")[0]
                ),
            },
        )
        assert "unmatched-1" in html.unescape(rule.text)
        assert "Does not match" in tested.text
        assert 'the event has "somebody"' in html.unescape(tested.text)


@pytest.mark.slow  # makes the other tenant with the command line, in a process of its own
def test_another_tenants_event_is_not_found(served: Served) -> None:
    served.api(
        "PUT",
        "/v1/buses/default/rules/mine",
        json={"pattern": {"source": ["mine"]}, "targets": [{"id": "t", "type": "log"}]},
    )
    send(served, {**event("private/1"), "source": "mine"})
    wait_until(
        lambda: served.api("GET", "/v1/buses/default/events/private/1").status_code == 200,
        what="the event's history",
    )
    with served.logged_in() as mine:
        assert mine.get("/console/buses/default/events/private/1").status_code == 200
    with served.logged_in(served.tenant("other")) as theirs:
        for path in (
            "/console/buses/default/events/private/1",
            "/console/buses/default/events/private/1?at=1",
        ):
            answer = theirs.get(path)
            assert answer.status_code == 404
            assert "private/1" in answer.text  # the id asked for, named in the refusal
            assert "mine" not in answer.text


def test_an_expired_session_redirects_to_the_login(served: Served) -> None:
    with served.logged_in() as client:
        assert client.get("/console/buses").status_code == 200
        sessions = served.console.sessions
        real = sessions.clock
        sessions.clock = lambda: real() + sessions.seconds + 1
        try:
            answer = client.get("/console/buses")
        finally:
            sessions.clock = real
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/console/login?then=/console/buses")
        # A form posted after the session ended comes back to the page it was on.
        sessions.clock = lambda: real() + sessions.seconds + 1
        try:
            posted = client.post(
                "/console/buses/default/rules/x/delete",
                data={"csrf": "x"},
                headers={"Referer": served.url + "/console/buses/default/rules/x"},
            )
        finally:
            sessions.clock = real
        assert posted.headers["location"] == "/console/login?then=/console/buses/default/rules/x"


def test_a_revoked_keys_session_ends(served: Served) -> None:
    key = served.key("admin")
    with served.logged_in(key) as client:
        assert client.get("/console/buses").status_code == 200
        key_id = key.split("_")[1]
        assert served.api("DELETE", f"/v1/keys/{key_id}").status_code == 200
        assert client.get("/console/buses").status_code == 303


def test_a_dead_letter_is_redriven_from_its_page(served: Served, receiver: Receiver) -> None:
    receiver.refusing = True
    served.api(
        "PUT",
        "/v1/buses/default/rules/to-hook",
        json={
            "pattern": {"source": ["hooked"]},
            "targets": [{"id": "hook", "type": "http", "url": receiver.url}],
        },
    )
    send(served, {**event("dl-1"), "source": "hooked"}, {**event("dl-2"), "source": "hooked"})
    with served.logged_in() as client:

        def letters() -> httpx.Response | None:
            answer = client.get("/console/buses/default/dead-letters")
            return answer if "dl-1" in answer.text and "dl-2" in answer.text else None

        page = wait_until(letters, what="both events dead-lettered")
        assert page is not None
        assert "&lt;script&gt;no thanks&lt;/script&gt;" in page.text or "HTTP 400" in page.text
        history = client.get("/console/buses/default/events/dl-1")
        assert "dead lettered" in history.text
        assert "Redeliver" in history.text
        receiver.refusing = False
        ids = [
            line.split('value="')[1].split('"')[0]
            for line in page.text.splitlines()
            if 'name="id"' in line
        ]
        assert len(ids) >= 2
        moved = client.post(
            "/console/buses/default/dead-letters/redrive",
            data={"csrf": csrf_of(page.text), "id": ids[:1]},
        )
        assert moved.status_code == 303
        assert moved.headers["location"].endswith("redriven=1")
        wait_until(lambda: len(receiver.taken) >= 1, what="the redriven letter delivered")
        redeliver = client.post(
            "/console/buses/default/events/dl-2/redeliver", data={"csrf": csrf_of(page.text)}
        )
        assert redeliver.status_code == 303
        assert "redelivered=1" in redeliver.headers["location"]
        wait_until(lambda: len(receiver.taken) >= 2, what="the redelivered event delivered")


def test_a_delivered_event_is_redelivered_from_its_page(served: Served, receiver: Receiver) -> None:
    served.api(
        "PUT",
        "/v1/buses/default/rules/to-again",
        json={
            "pattern": {"source": ["again"]},
            "targets": [
                {"id": "hook", "type": "http", "url": receiver.url},
                {"id": "audit", "type": "log"},
            ],
        },
    )

    def received() -> int:  # the receiver is the module's: count this event's bodies only
        return sum(b'"id":"again-1"' in body for body in receiver.taken)

    send(served, {**event("again-1"), "source": "again"})
    wait_until(lambda: received() >= 1, what="the event delivered")
    url = "/console/buses/default/events/again-1"
    with served.logged_in() as client:

        def delivered() -> httpx.Response | None:
            answer = client.get(url)
            return answer if answer.text.count("state-delivered") >= 2 else None

        page = wait_until(delivered, what="both targets delivered")
        assert page is not None
        assert 'value="to-again/hook"' in page.text
        token = csrf_of(page.text)
        no_token = client.post(url + "/redeliver", data={"to": "to-again/hook"})
        assert no_token.status_code == 403
        sent = client.post(url + "/redeliver", data={"csrf": token, "to": "to-again/hook"})
        assert sent.status_code == 303
        assert "redelivered=1" in sent.headers["location"]
        wait_until(lambda: received() >= 2, what="the redelivered event received")
        shown = client.get(sent.headers["location"])
        assert "Sent again to 1 target(s)." in shown.text
        gone = client.post(url + "/redeliver", data={"csrf": token, "to": "to-again/gone"})
        assert gone.status_code == 404
    with served.logged_in(served.key("read")) as reader:
        page = reader.get(url)
        assert "Redeliver" not in page.text
        refused = reader.post(
            url + "/redeliver", data={"csrf": csrf_of(page.text), "to": "to-again/hook"}
        )
        assert refused.status_code == 403
    assert received() == 2


def test_the_delivery_charts_are_drawn_from_the_delivery_history(served: Served) -> None:
    served.api(
        "PUT",
        "/v1/buses/default/rules/charted",
        json={"pattern": {"source": ["charted"]}, "targets": [{"id": "log", "type": "log"}]},
    )
    send(served, *({**event(f"c-{i}"), "source": "charted"} for i in range(3)))
    attempts = "/v1/buses/default/rules/charted/targets/log/attempts"

    def delivered() -> bool:
        return len(served.api("GET", attempts).json()["attempts"]) == 3

    wait_until(delivered, what="the three events delivered")
    with served.logged_in() as client:
        page = client.get("/console/buses")
    # The history is read at once (no sample of the metrics is needed), and is what a
    # scale-out gateway, which delivers nothing itself, sees too.
    assert "Delivered attempts&#39; duration" in page.text
    title = page.text.split("<title>Deliveries: ")[1].split("</title>")[0]
    peak = float(title.split(", ")[1].split(" ")[0])
    assert peak > 0, title
