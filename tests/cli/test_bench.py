"""`stellwerk bench NAME` can load every benchmark in bench/ (running them is `make bench`), and
the helpers they measure a server with read its whole process tree."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tests.polling import wait_until

from stellwerk.cli import process_cpu, process_tree, process_written, written_since
from stellwerk.cli.bench import available, load


@pytest.mark.parametrize("name", available())
def test_every_benchmark_loads_and_has_a_main(name: str) -> None:
    module = load(name)
    assert callable(module.main), f"bench/{name}.py has no main(argv)"


@pytest.mark.slow
def test_a_servers_cpu_and_writes_are_summed_over_its_process_tree(tmp_path: Path) -> None:
    """A parent whose child writes: the child's bytes and CPU count for the parent's tree."""
    written = tmp_path / "written"
    child = (
        "import os, time\n"
        f"fd = os.open({str(written)!r}, os.O_WRONLY | os.O_CREAT)\n"
        "os.write(fd, bytes(1 << 20)); os.fsync(fd)\n"
        "end = time.process_time() + 0.2\n"
        "while time.process_time() < end: pass\n"
        f"open({str(tmp_path / 'done')!r}, 'w').close()\n"
        "time.sleep(60)\n"
    )
    parent = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', {child!r}])\n"
        "time.sleep(60)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", parent])
    try:
        start = process_written(process.pid)
        wait_until(lambda: (tmp_path / "done").exists(), what="the child wrote and spun")
        tree = process_tree(process.pid)
        assert tree[0] == process.pid
        assert len(tree) == 2
        assert written_since(start, process_written(process.pid)) >= 1 << 20
        assert process_cpu(process.pid) >= 0.2
    finally:
        for each in reversed(process_tree(process.pid)):  # the child first: ours, by pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(each, signal.SIGKILL)
        process.wait()
