"""`stellwerk bench NAME`: run a benchmark from the checkout's `bench/` folder.

Benchmarks are scripts with `main(argv) -> int` that print their figures beside a baseline
measured in the same run; `stellwerk bench all` runs each of them in turn.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import click


def bench_dir() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "bench"
        if candidate.is_dir() and (parent / "pyproject.toml").exists():
            return candidate
    raise click.ClickException("no bench/ folder: benchmarks run from a source checkout")


def available() -> list[str]:
    return sorted(p.stem for p in bench_dir().glob("*.py") if not p.stem.startswith("_"))


def load(name: str) -> ModuleType:
    """Import `bench/NAME.py` as module `stellwerk_bench_NAME`.

    `bench/` goes on the import path first: the benchmarks import the load generator,
    `bench/loadgen/`, which lives in the checkout and is not shipped with the package.
    """
    folder = str(bench_dir())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return load_file(bench_dir() / f"{name}.py", f"stellwerk_bench_{name}")


def load_file(path: Path, name: str) -> ModuleType:
    """Import the file at `path` as module `name` (benchmarks load their helpers with it).

    The module is registered in `sys.modules` before it runs: a dataclass looks its module up
    there while it is being made, and fails if it is missing.
    """
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def nats_support() -> ModuleType:
    """tests/nats_support.py (`NatsServer` and friends), for the benchmarks that run NATS."""
    return load_file(
        bench_dir().parent / "tests" / "nats_support.py", "stellwerk_bench_nats_support"
    )


def process_tree(pid: int) -> list[int]:
    """`pid` and every live process below it: embedded mode runs a server as a parent and its
    children, and each has its own counters in /proc."""
    found, todo = [], [pid]
    while todo:
        each = todo.pop()
        found.append(each)
        try:
            threads = list(Path(f"/proc/{each}/task").iterdir())
        except OSError:
            continue  # it ended meanwhile
        for thread in threads:
            # `children` lists the children that this thread forked (Linux 3.5 and newer).
            with contextlib.suppress(OSError, ValueError):
                todo += [int(child) for child in (thread / "children").read_text().split()]
    return found


def process_written(pid: int | None) -> dict[int, int]:
    """Per process of the tree below `pid`: the bytes it has caused to be written to storage
    so far (`write_bytes` in /proc/PID/io; the page cache's dirty bytes are counted when
    dirtied, so a write that is overwritten before it reaches the disk still counts). Empty
    where that cannot be read. Subtract with `written_since`."""
    counts: dict[int, int] = {}
    for each in process_tree(pid) if pid is not None else []:
        with contextlib.suppress(OSError, ValueError):
            for row in Path(f"/proc/{each}/io").read_text().splitlines():
                if row.startswith("write_bytes:"):
                    counts[each] = int(row.split()[1])
    return counts


def written_since(before: dict[int, int], after: dict[int, int]) -> int:
    """Bytes written between two `process_written` readings; a process that started in
    between counts from zero (one that ended in between is lost: its counters went with it)."""
    return sum(count - before.get(each, 0) for each, count in after.items())


def process_cpu(pid: int | None) -> float:
    """CPU seconds (user + system, all threads) a process and the processes below it have used
    so far, those it has reaped included; 0 where that cannot be read (no process, no /proc).

    Benchmarks print CPU per event beside their rates: on a shared machine it is the figure
    the neighbours move least.
    """
    ticks = 0
    for each in process_tree(pid) if pid is not None else []:
        try:
            text = Path(f"/proc/{each}/stat").read_text()
        except OSError:
            continue
        # After the command name in parentheses: state is field 3, utime 14, stime 15, and the
        # reaped children's cutime 16 and cstime 17 (proc(5)).
        fields = text[text.rindex(")") + 2 :].split()
        ticks += sum(int(field) for field in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("name")
@click.pass_context
def bench(ctx: click.Context, name: str) -> int:
    """Run benchmark NAME (or `all`); extra arguments go to the benchmark."""
    names = available() if name == "all" else [name]
    for each in names:
        path = bench_dir() / f"{each}.py"
        if not path.exists():
            raise click.UsageError(f"no benchmark {each!r}; have: {', '.join(available())}")
        module = load(each)
        click.echo(f"== bench {each}", err=True)
        code = module.main(list(ctx.args))
        if code:
            return int(code)
    return 0
