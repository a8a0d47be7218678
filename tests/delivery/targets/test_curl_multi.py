"""The event-loop driver of libcurl's multi handle, on its own: timers, failures, closing."""

from __future__ import annotations

import pycurl
import pytest
from tests.delivery.targets.support import Receiver, Silent

from stellwerk.delivery.targets.curl_multi import EventLoopMulti


def easy(url: str, **options: int) -> pycurl.Curl:
    curl = pycurl.Curl()
    curl.setopt(pycurl.URL, url)
    curl.setopt(pycurl.POSTFIELDS, b"{}")
    curl.setopt(pycurl.WRITEFUNCTION, lambda chunk: None)
    for name, value in options.items():
        curl.setopt(getattr(pycurl, name), value)
    return curl


async def test_libcurl_s_own_timeouts_fire_through_the_loop_s_timer(silent: Silent) -> None:
    # Nothing but the timer callback wakes libcurl here: the server never answers.
    multi = EventLoopMulti()
    curl = easy(silent.url, TIMEOUT_MS=200)
    try:
        with pytest.raises(pycurl.error) as caught:
            await multi.perform(curl)
    finally:
        await multi.close()
        curl.close()
    assert caught.value.args[0] == pycurl.E_OPERATION_TIMEDOUT


async def test_transfers_finish_and_a_handle_runs_again(receiver: Receiver) -> None:
    multi = EventLoopMulti()
    curl = easy(receiver.url())
    try:
        for _ in range(3):
            await multi.perform(curl)
            assert curl.getinfo(pycurl.RESPONSE_CODE) == 200
    finally:
        await multi.close()
        curl.close()
    assert len(receiver.seen) == 3
    assert len({seen.peer for seen in receiver.seen}) == 1


async def test_a_closed_multi_runs_nothing(receiver: Receiver) -> None:
    multi = EventLoopMulti()
    await multi.close()
    curl = easy(receiver.url())
    with pytest.raises(RuntimeError, match="closed"):
        await multi.perform(curl)
    curl.close()
    assert receiver.seen == []
