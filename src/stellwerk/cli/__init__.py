"""The stellwerk command line; benchmarks in `bench/` load their helpers from here."""

from stellwerk.cli.bench import (
    load_file,
    nats_support,
    process_cpu,
    process_tree,
    process_written,
    written_since,
)
from stellwerk.cli.main import main

__all__ = [
    "load_file",
    "main",
    "nats_support",
    "process_cpu",
    "process_tree",
    "process_written",
    "written_since",
]
