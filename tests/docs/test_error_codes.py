"""The README's list of error codes is the server's: every code the code can answer is in it,
and it lists none that the code cannot answer.

The codes are read from the source, not from a list kept beside it: the literal codes given to
every `ApiError`, `InvalidRuleError` and service-layer error (`ServiceError` and its kin), their
default codes, the codes of whole requests and single events (`BindingErrorCode`,
`EventErrorCode`), Starlette's statuses as `api.errors` names them, the schema check's, and
the embedded log's reasons for refusing appends on a disk that refuses writes.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re

from tests.docs.runbook import ROOT

import stellwerk
from stellwerk.api.errors import _HTTP_CODES
from stellwerk.events import EventErrorCode
from stellwerk.ingest.binding import BindingErrorCode
from stellwerk.service import ServiceError
from stellwerk.service.ingest import SCHEMA_FAILURE
from stellwerk.storage.sqlite import DISK_TROUBLE_CODES

_CODE = re.compile(r"[A-Z][A-Za-z]+\Z")
# Worded by the ingest binding too, but never answered: the body limit in front of it answers
# PayloadTooLarge first, for the same limit.
UNREACHABLE = {str(BindingErrorCode.BODY_TOO_LARGE)}


def _service_errors() -> list[type[ServiceError]]:
    # Every module imported first: a capability's error class exists only once its module is,
    # and which are depends on what ran before in the session.
    for module in pkgutil.walk_packages(stellwerk.__path__, "stellwerk."):
        if ".migrations" not in module.name and not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    found, todo = [], [ServiceError]
    while todo:
        kind = todo.pop()
        found.append(kind)
        todo += kind.__subclasses__()
    return found


def codes_in_source() -> set[str]:
    errors = _service_errors()
    raising = {"ApiError", "InvalidRuleError", *(kind.__name__ for kind in errors)}
    codes = {kind.default_code for kind in errors} | {"InvalidRule"}  # InvalidRuleError's default
    for path in (ROOT / "src" / "stellwerk").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", getattr(node.func, "attr", None))
            if name not in raising:
                continue
            given = [*node.args, *(k.value for k in node.keywords if k.arg in ("code", "error"))]
            codes |= {
                argument.value
                for argument in given
                if isinstance(argument, ast.Constant)
                and isinstance(argument.value, str)
                and _CODE.match(argument.value)
            }
    codes |= {str(code) for code in EventErrorCode} | {str(code) for code in BindingErrorCode}
    codes |= set(_HTTP_CODES.values()) | {SCHEMA_FAILURE} | set(DISK_TROUBLE_CODES)
    return codes - UNREACHABLE


def codes_in_readme() -> set[str]:
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| status | `error` | when |") :]
    table = table[: table.index("\n\n")]
    return {
        code for row in table.splitlines()[2:] for code in re.findall(r"`(\w+)`", row.split("|")[2])
    }


def test_the_readme_lists_every_error_code_the_server_answers() -> None:
    source, readme = codes_in_source(), codes_in_readme()
    assert "InvalidJson" in source  # the reading works
    assert sorted(source - readme) == [], "answered by the server, missing in the README"
    assert sorted(readme - source) == [], "in the README, never answered by the server"
