"""`stellwerk bench NAME`: run a benchmark from the checkout's `bench/` folder.

Benchmarks are scripts with `main(argv) -> int` that print their figures beside a baseline
measured in the same run; `stellwerk bench all` runs each of them in turn.
"""

from __future__ import annotations

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


def process_cpu(pid: int | None) -> float:
    """CPU seconds (user + system, all threads) a process has used so far; 0 where that cannot
    be read (no process, or no /proc).

    Benchmarks print CPU per event beside their rates: on a shared machine it is the figure
    the neighbours move least.
    """
    if pid is None:
        return 0.0
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # After the command name in parentheses: state is field 3, utime 14, stime 15 (proc(5)).
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
