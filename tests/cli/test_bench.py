"""`stellwerk bench NAME` can load every benchmark in bench/ (running them is `make bench`)."""

from __future__ import annotations

import pytest

from stellwerk.cli.bench import available, load


@pytest.mark.parametrize("name", available())
def test_every_benchmark_loads_and_has_a_main(name: str) -> None:
    module = load(name)
    assert callable(module.main), f"bench/{name}.py has no main(argv)"
