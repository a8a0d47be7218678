"""Embedded mode on several processes, for real: a parent runs a gateway and a pipeline process on
one data directory, restarts them when they die, and stops them together.

Every kill here is a SIGKILL of a real process in mid-load (of each child, of the parent, of the
whole process group); afterwards every event that got a 202 reaches the receiver at least once,
and the duplicates that at-least-once delivery allows are counted and printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
from pathlib import Path
from typing import Final

import httpx
import pytest
from tests.cli.server import ServerProcess, log_problems, running_server, wait_for_group
from tests.conftest import free_port
from tests.e2e.receiving import Received, running_receiver
from tests.polling import wait_until

from stellwerk.starthold import START_HOLD_ENV

pytestmark = pytest.mark.slow

FLAGS: Final = ("--allow-private-targets", "--tenant-event-rate", "0", "--tenant-request-rate", "0")
# A child restarted after a kill waits this long first (0.5 s unless set): the wait is what the
# backoff test checks, and elsewhere idle time.
FIRST_BACKOFF: Final = 0.05
TWO: Final = ("--processes", "2", "--restart-backoff-seconds", str(FIRST_BACKOFF), *FLAGS)
BATCH: Final = 50
START_SECONDS: Final = 120.0  # process starts on a loaded machine take long


def log_lines(server: ServerProcess) -> list[dict[str, object]]:
    lines = []
    for line in server.output().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            lines.append(record)
    return lines


def lines_starting(server: ServerProcess, start: str) -> list[dict[str, object]]:
    return [r for r in log_lines(server) if str(r.get("event", "")).startswith(start)]


def wait_for_lines(
    server: ServerProcess, start: str, count: int = 1, timeout: float = START_SECONDS
) -> list[dict[str, object]]:
    """The log lines whose event starts with `start`, once there are `count` of them."""

    def found() -> list[dict[str, object]]:
        assert server.process.poll() is None, server.output()
        return lines_starting(server, start)

    return wait_until(
        found,
        what=f"{count} log lines {start!r}",
        within=timeout,
        accept=lambda lines: len(lines) >= count,
    )


def children(pid: int) -> dict[str, int]:
    """The child processes of `pid` by role (from their command lines)."""
    found = {}
    with contextlib.suppress(FileNotFoundError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            with contextlib.suppress(FileNotFoundError):
                argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
                if b"--role" in argv:
                    found[argv[argv.index(b"--role") + 1].decode()] = int(child)
    return found


def lock_holder(data: Path, name: str) -> int:
    return int((data / "run" / name).read_text())


def event(n: int, prefix: str = "e") -> dict[str, object]:
    return {"specversion": "1.0", "id": f"{prefix}{n}", "source": "urn:load", "type": "load"}


class Platform:
    """The API of a server under test, with the keys of its first tenant."""

    def __init__(self, server: ServerProcess) -> None:
        keys = json.loads((server.data_dir / "bootstrap.json").read_text())
        self.url = server.url
        self.admin = {"Authorization": f"Bearer {keys['admin_key']}"}
        self.ingest = {"Authorization": f"Bearer {keys['ingest_key']}"}

    def rule(self, url: str, **target: object) -> None:
        rule = {
            "pattern": {"type": ["load"]},
            "targets": [{"id": "hook", "type": "http", "url": url, "concurrency": 8, **target}],
        }
        answer = httpx.put(
            f"{self.url}/v1/buses/default/rules/all", json=rule, headers=self.admin, timeout=30
        )
        assert answer.status_code == 201, answer.text

    def send(self, ids: range, prefix: str = "e") -> None:
        answer = httpx.post(
            f"{self.url}/v1/buses/default/events",
            json=[event(n, prefix) for n in ids],
            headers=self.ingest,
            timeout=30,
        )
        assert answer.status_code == 202, answer.text


class Load:
    """A client in a thread that sends batches until stopped and records what got a 202; while
    the gateway is away it tries again. Started again after a stop, it goes on with new ids."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.acknowledged: list[str] = []
        self.failures = 0
        self._sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread()

    def __enter__(self) -> Load:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=120)

    def until(self, count: int, timeout: float = START_SECONDS) -> None:
        def acknowledged() -> int:
            assert self._thread.is_alive()
            return len(self.acknowledged)

        wait_until(
            acknowledged,
            what=f"{count} events acknowledged",
            within=timeout,
            accept=lambda n: n >= count,
        )

    def _run(self) -> None:
        with httpx.Client(base_url=self.platform.url, headers=self.platform.ingest) as client:
            while not self._stop.is_set():
                ids = range(self._sent, self._sent + BATCH)
                try:
                    answer = client.post(
                        "/v1/buses/default/events", json=[event(n) for n in ids], timeout=30
                    )
                except httpx.TransportError:
                    answer = None
                if answer is None or answer.status_code != 202:
                    self.failures += 1
                    self._stop.wait(0.05)  # the gateway restarts: try the same batch again
                    continue
                self.acknowledged.extend(f"e{n}" for n in ids)
                self._sent += BATCH


def all_delivered(received: Received, acknowledged: list[str], timeout: float = 180) -> int:
    """Wait until every acknowledged id arrived; the number of duplicates."""
    everything = set(acknowledged)
    complete = received.wait_for(lambda r: everything <= set(r.ids), timeout)
    missing = everything - set(received.ids)
    assert complete, f"{len(missing)} acknowledged events never arrived, e.g. {sorted(missing)[:5]}"
    return sum(count - 1 for count in received.ids.values())


def thread_nices(pid: int) -> set[int]:
    """The nice values of a process's threads (each thread has its own on Linux)."""
    nices = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
            nices.add(int((task / "stat").read_text().rsplit(")", 1)[1].split()[16]))
    return nices


def test_a_gateway_and_a_pipeline_process_share_the_work(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with (
        running_receiver() as (received, url),
        running_server(data, free_port(), *TWO, ready_timeout=START_SECONDS) as server,
    ):
        wait_for_lines(server, "processes ready")
        roles = children(server.process.pid)
        assert set(roles) == {"gateway", "pipeline"}
        # The gateway appends to the log; the pipeline routes and delivers.
        assert lock_holder(data, "log-writer.lock") == roles["gateway"]
        assert lock_holder(data, "pipeline.lock") == roles["pipeline"]
        # Acks first: every thread of the pipeline runs 10 steps of nice below the gateway's.
        mine = os.getpriority(os.PRIO_PROCESS, 0)
        assert thread_nices(roles["gateway"]) == {mine}
        assert thread_nices(roles["pipeline"]) == {min(19, mine + 10)}
        platform = Platform(server)
        platform.rule(url)
        for start in range(0, 500, BATCH):
            platform.send(range(start, start + BATCH))
        assert all_delivered(received, [f"e{n}" for n in range(500)]) == 0
        assert children(server.process.pid) == roles  # nobody died on the way
        # The gateway's /metrics holds the pipeline's too, labelled by process.
        exposition = httpx.get(f"{server.url}/metrics", timeout=30).text
        assert 'stellwerk_peer_scrape_ok{process="pipeline"} 1\n' in exposition
        assert 'stellwerk_invocations_total{process="pipeline",' in exposition
        assert 'stellwerk_ingest_events_accepted_total{process="gateway",' in exposition
        # `?name[]=` (a peer site's health signals): only those samples, of both processes.
        names = {"name[]": ["stellwerk_invocations_total", "stellwerk_ingest_requests_total"]}
        chosen = httpx.get(f"{server.url}/metrics", params=names, timeout=30).text
        assert 'stellwerk_invocations_total{process="pipeline",' in chosen
        assert 'stellwerk_ingest_requests_total{process="gateway",' in chosen
        assert "stellwerk_ingest_events_accepted_total" not in chosen
        server.terminate(signal.SIGTERM)
        assert server.process.wait(timeout=120) == 0
    assert log_problems(server.output()) == []


def test_processes_1_keeps_every_role_in_one_process(tmp_path: Path) -> None:
    data = tmp_path / "data"
    flags = ("--processes", "1", *FLAGS)
    with (
        running_receiver() as (received, url),
        running_server(data, free_port(), *flags, ready_timeout=START_SECONDS) as server,
    ):
        assert children(server.process.pid) == {}
        assert lock_holder(data, "log-writer.lock") == server.process.pid
        assert lock_holder(data, "pipeline.lock") == server.process.pid
        platform = Platform(server)
        platform.rule(url)
        platform.send(range(BATCH))
        all_delivered(received, [f"e{n}" for n in range(BATCH)])


class Kills:
    """The stages of one run under load, each a kill -9: what was acknowledged and delivered
    when it came, and the duplicates it cost, printed at the end."""

    def __init__(self, received: Received, load: Load) -> None:
        self.received = received
        self.load = load
        self.lines: list[str] = []
        self._duplicates = 0
        self._in_flight = 0

    def under_way(self) -> None:
        """Until the load is under way again: ingest and delivery both moving (6 batches more
        acknowledged, 50 events more arrived). Every event acknowledged but not yet arrived
        when the kill comes is one the kill could lose."""
        self.load.until(len(self.load.acknowledged) + 6 * BATCH)
        delivered = len(self.received.ids)
        assert self.received.wait_for(lambda r: len(r.ids) >= delivered + 50, START_SECONDS)
        self._in_flight = len(self.load.acknowledged) - len(self.received.ids)

    def all_delivered(self, victim: str) -> None:
        """With the load stopped, every event acknowledged arrived; say what the kill of
        `victim` cost. Then the load goes on (under a load that never ends, the deliveries of
        a restarted pipeline would not catch up)."""
        self.load.stop()
        acknowledged = list(self.load.acknowledged)
        delivered_before = len(self.received.ids)
        duplicates = all_delivered(self.received, acknowledged)
        self.load.start()
        assert duplicates <= len(acknowledged)
        self.lines.append(
            f"kill -9 of the {victim}: about {self._in_flight} acknowledged and not yet arrived "
            f"as it came; {len(acknowledged)} acknowledged, {delivered_before} delivered before "
            f"the end, {duplicates - self._duplicates} duplicates"
        )
        self._duplicates = duplicates


@pytest.mark.timeout(480)  # four kills, three servers
def test_sigkill_of_each_process_in_turn_mid_load_loses_no_acknowledged_event(
    tmp_path: Path,
) -> None:
    """One data directory under one load, killed four times: the gateway and the pipeline (the
    parent restarts each), the parent (its children drain and end with it), the whole process
    group. After each kill every acknowledged event arrives, from the same server or from a
    new one started on the directory, and the load goes on."""
    data = tmp_path / "data"
    port = free_port()
    with (
        running_receiver() as (received, url),
        running_server(data, port, *TWO, new_session=True, ready_timeout=START_SECONDS) as first,
    ):
        wait_for_lines(first, "processes ready")
        platform = Platform(first)
        platform.rule(url)
        with Load(platform) as load:
            kills = Kills(received, load)
            for restarts, victim in enumerate(("gateway", "pipeline"), start=1):
                roles = children(first.process.pid)
                kills.under_way()
                os.kill(roles[victim], signal.SIGKILL)
                exited = wait_for_lines(first, f"{victim} process exited")
                assert exited[0]["signal"] == "SIGKILL"
                assert exited[0]["restart_in"] == FIRST_BACKOFF
                wait_for_lines(first, "process started", count=2 + restarts)
                first.wait_until("/readyz", 200, timeout=START_SECONDS)
                load.until(len(load.acknowledged) + 2 * BATCH)  # the load goes on after it
                kills.all_delivered(victim)
            kills.under_way()
            first.terminate(signal.SIGKILL)  # the children drain and end with it
            first.process.wait(timeout=30)
            wait_for_group(first.process.pid, timeout=120)
            with running_server(
                data, port, *TWO, new_session=True, ready_timeout=START_SECONDS
            ) as second:
                kills.all_delivered("parent")
                kills.under_way()
                os.killpg(second.process.pid, signal.SIGKILL)
                second.process.wait(timeout=30)
                wait_for_group(second.process.pid, timeout=120)
            with running_server(
                data, port, *TWO, new_session=True, ready_timeout=START_SECONDS
            ) as third:
                load.until(len(load.acknowledged) + 2 * BATCH)  # the load goes on after it
                kills.all_delivered("group")
                load.stop()
                third.terminate(signal.SIGTERM)
                assert third.process.wait(timeout=120) == 0
    print("\n".join(kills.lines))


def test_a_child_that_keeps_failing_at_start_is_restarted_with_backoff(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    taken = socket.create_server(("127.0.0.1", port))  # the gateway cannot listen
    try:
        with running_server(data, port, *TWO, ready=False) as server:
            backing_off = wait_for_lines(server, "gateway process keeps exiting", count=3)
            waits = [line["restart_in"] for line in lines_starting(server, "gateway process")]
            doubling = [FIRST_BACKOFF * 2**n for n in range(4)]
            assert waits[:4] == doubling[: len(waits[:4])]
            assert backing_off[0]["exit_code"] != 0  # it could not listen
            starts = len(lines_starting(server, "process started"))
            exits = len(lines_starting(server, "gateway process"))
            assert starts <= exits + 1  # one start per restart, no more
            # The pipeline waits for a ready gateway: loaded meanwhile, but not started.
            assert {line["role"] for line in lines_starting(server, "process started")} == {
                "gateway"
            }
            loaded = children(server.process.pid)["pipeline"]
            taken.close()
            server.wait_until("/readyz", 200, timeout=START_SECONDS)
            wait_for_lines(server, "processes ready")
            (pipeline,) = (
                line
                for line in lines_starting(server, "process started")
                if line["role"] == "pipeline"
            )
            assert pipeline["pid"] == loaded  # the process that was loaded goes on
            server.terminate(signal.SIGTERM)
            assert server.process.wait(timeout=120) == 0
    finally:
        taken.close()


def test_sigterm_to_the_process_group_drains_every_process_and_exits_0(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_server(
        data, free_port(), *TWO, new_session=True, ready_timeout=START_SECONDS
    ) as server:
        wait_for_lines(server, "processes ready")
        roles = children(server.process.pid)
        Platform(server).send(range(BATCH))
        os.killpg(server.process.pid, signal.SIGTERM)  # as make and Kubernetes do
        assert server.process.wait(timeout=120) == 0
        wait_for_group(server.process.pid)
    output = server.output()
    assert log_problems(output) == []
    assert len(lines_starting(server, "Application shutdown complete")) == 2
    assert lines_starting(server, "processes stopped")
    for pid in roles.values():
        assert not Path(f"/proc/{pid}").exists()


def test_a_redrive_through_the_api_reaches_the_pipeline(tmp_path: Path) -> None:
    data = tmp_path / "data"
    status = [400]  # refused for good first: the delivery goes to the dead-letter queue
    with (
        running_receiver(answer=lambda: status[0]) as (received, url),
        running_server(data, free_port(), *TWO, ready_timeout=START_SECONDS) as server,
    ):
        wait_for_lines(server, "processes ready")
        platform = Platform(server)
        platform.rule(url, retry_policy={"maximum_retry_attempts": 0})
        platform.send(range(3))
        wait_until(
            lambda: httpx.get(
                f"{server.url}/v1/buses/default/dead-letters", headers=platform.admin
            ).json()["dead_letters"],
            what="3 dead letters",
            within=START_SECONDS,
            accept=lambda letters: len(letters) == 3,
        )
        status[0] = 204
        answer = httpx.post(
            f"{server.url}/v1/buses/default/dead-letters/redrive",
            json={"all": True},
            headers=platform.admin,
        )
        assert answer.json() == {"redriven": 3}
        all_delivered(received, ["e0", "e1", "e2"], timeout=60)


def test_a_second_server_on_the_same_data_directory_waits_for_the_first(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_server(data, free_port(), *TWO, ready_timeout=START_SECONDS) as first:
        wait_for_lines(first, "processes ready")
        roles = children(first.process.pid)
        second_log = tmp_path / "second.log"
        with running_server(data, free_port(), *TWO, ready=False, log_path=second_log) as second:
            waiting = wait_for_lines(second, "waiting for the event log")
            assert waiting[0]["holder_pid"] == roles["gateway"]
            assert children(second.process.pid) == {}  # nothing started while it waits
            first.terminate(signal.SIGTERM)
            assert first.process.wait(timeout=120) == 0
            wait_for_lines(second, "processes ready")
            assert len(lines_starting(second, "waiting for the event log")) == 1
            second.terminate(signal.SIGTERM)
            assert second.process.wait(timeout=120) == 0
            assert log_problems(second.output()) == []


def test_a_control_plane_out_of_reach_at_start_is_retried_and_sigterm_still_stops(
    tmp_path: Path,
) -> None:
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/stellwerk"
    with running_server(
        tmp_path / "data", free_port(), *TWO, "--database-url", nowhere, ready=False
    ) as server:
        (failed,) = wait_for_lines(server, "start failed, retrying")
        assert failed["retry_in"] == 0.1
        assert "OSError" in str(failed["error"]) or "refused" in str(failed["error"])
        assert children(server.process.pid) == {}
        server.terminate(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0


def test_a_saved_rule_is_in_force_in_the_pipeline_before_the_answer(tmp_path: Path) -> None:
    """A rule saved through the gateway routes the next event the pipeline process routes: the
    gateway answers once the pipeline has taken the change in. This holds from the gateway's
    first answer, while the pipeline is still starting (a change committed after the pipeline
    had read the rules but before it listened for changes was once lost until a restart: a
    rotated secret then kept the old one signing alone). The pipeline's start is held in that
    window (`STELLWERK_START_HOLD`), so that saves fall into it however fast the start is."""
    hold = tmp_path / "hold"
    os.mkfifo(hold)
    with (
        contextlib.ExitStack() as stack,
        running_receiver() as (received, url),
        running_server(
            tmp_path / "data",
            free_port(),
            *TWO,
            env={START_HOLD_ENV: f"pipeline:{hold}"},
            ready_timeout=START_SECONDS,
        ) as server,
    ):
        platform = Platform(server)
        client = stack.enter_context(httpx.Client(base_url=platform.url, timeout=30))

        def save(bus: str) -> None:
            answer = client.put(f"/v1/buses/{bus}", headers=platform.admin)
            assert answer.status_code in (200, 201), answer.text
            rule = {
                "pattern": {"type": ["t"]},
                "targets": [{"id": "hook", "type": "http", "url": url}],
            }
            answer = client.put(f"/v1/buses/{bus}/rules/all", json=rule, headers=platform.admin)
            assert answer.status_code == 201, answer.text

        def send(bus: str, event_id: str | None = None) -> None:
            answer = client.post(
                f"/v1/buses/{bus}/events",
                json={
                    "specversion": "1.0",
                    "id": event_id or bus,
                    "source": "urn:start",
                    "type": "t",
                },
                headers=platform.ingest,
            )
            assert answer.status_code == 202, answer.text

        # Each save has a bus of its own, so that no later save of the same bus makes up for a
        # lost one. First three while the pipeline is held between its first read of the rules
        # and listening for changes, then bus after bus until it is ready ...
        wait_for_lines(server, "start held")
        starting = [f"held-{n}" for n in range(3)]
        for bus in starting:
            save(bus)
        release = os.open(hold, os.O_WRONLY | os.O_NONBLOCK)  # no reader: ENXIO, not a hang
        os.write(release, b"go\n")
        os.close(release)
        while not lines_starting(server, "processes ready"):
            assert server.process.poll() is None, server.output()
            save(f"start-{len(starting)}")
            starting.append(f"start-{len(starting)}")
        for bus in starting:
            send(bus)
        # ... then each bus's event sent right after its rule's answer, on a kept connection.
        # The buses have an event before their rule, so that the router passes them over
        # lazily (at its sweeps), and the rule starts where its save found the log's end.
        running = [f"running-{n}" for n in range(20)]
        for bus in running:
            answer = client.put(f"/v1/buses/{bus}", headers=platform.admin)
            assert answer.status_code == 201, answer.text
            send(bus, f"{bus}-before")
        for bus in running:
            save(bus)
            send(bus)
        everything = set(starting + running)
        arrived = received.wait_for(lambda r: everything <= set(r.ids), 30)
        missing = sorted(everything - set(received.ids))
        assert arrived, f"events no rule routed: {missing} of {len(everything)}"
