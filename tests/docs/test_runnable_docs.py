"""The README and the docs/ pages, run as written: every ```` ```sh run ```` block, in order,
against a fresh `make run` server (see `runbook` for what runs and what is substituted).

The README is run whole: each of its shell blocks is a `run` or a `server` block, so a command
cannot be added to it without being tested. In docs/ the blocks meant to run are marked so.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from tests.docs.runbook import ROOT, Runbook, blocks_of, runnable

# A whole README run is ten blocks, three server starts and their drains: bounded work that
# took 110-127 s at a load average of 15-20, past the suite's 120 s hang guard (one run of
# three failed so). Each block has its own 120 s bound and each server start its 60 s.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]

README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES_WITH_EXAMPLES = [page for page in DOCS if runnable(page)]


def test_every_shell_block_of_the_readme_runs() -> None:
    shown_only = [b.line for b in blocks_of(README) if b.language == "sh" and b.kind is None]
    assert shown_only == [], f"README.md lines {shown_only}: mark them `sh run` or `sh server`"


def test_the_readme_runs_as_written_to_a_verified_webhook(tmp_path: Path) -> None:
    book = Runbook(README, tmp_path)
    assert shutil.which("stellwerk", path=book.env["PATH"]) is None  # as in a fresh clone
    book.run_all()
    printed = "".join(outcome.output for outcome in book.outcomes)
    # `stellwerk receive` prints this only for a webhook whose signature it verified.
    assert '\nverified o-1: {"specversion":"1.0","id":"o-1"' in printed, printed
    assert not book.server_log_problems(), book.server_log_problems()


def test_some_docs_pages_have_examples_that_run() -> None:
    names = {page.name for page in PAGES_WITH_EXAMPLES}
    assert {"ingest.md", "routing.md", "patterns.md", "operations.md"} <= names


@pytest.mark.parametrize("page", PAGES_WITH_EXAMPLES, ids=lambda page: page.name)
def test_the_runnable_examples_of_a_docs_page(page: Path, tmp_path: Path) -> None:
    blocks = runnable(page)
    assert blocks[0].kind == "server", f"{page.name}: start with the server the examples need"
    book = Runbook(page, tmp_path)
    book.run_all()
    assert not book.server_log_problems(), book.server_log_problems()
