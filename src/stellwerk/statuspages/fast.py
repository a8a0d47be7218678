"""Fresh public pages answered from L1 ahead of the app's stack (`Capability.fast_path`).

It answers only what the page's route would answer from the same entry without waiting: GET
or HEAD of a public page's HTML (`/status/{page}`, its history, an incident) with no query
string, the page's name found lately (`PageCache.known_page`), its entry fresh in L1. Anything
else goes on to the route: a miss or a stale entry (the route starts the render or refresh), a
page that is not public (the route asks for a login), a custom domain, a request under a root
path. Each entry's header block is built once, by Starlette's `Response` as the route builds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, cast

from starlette.responses import Response
from starlette.types import Scope

from stellwerk.capability import Answer, Answerer, Opened
from stellwerk.statuspages.cache import (
    MAX_ENTRIES,
    PUBLIC_CACHE_CONTROL,
    Entry,
    Key,
    PageCache,
    etag_matches,
)
from stellwerk.statuspages.model import Visibility
from stellwerk.statuspages.opened import StatusPagesOpened

PREFIX: Final = "/status/"
PAGE: Final = "/status/{page}"
HISTORY: Final = "/status/{page}/history"
INCIDENT: Final = "/status/{page}/incidents/{incident}"
ROUTES: Final = {"page": PAGE, "history": HISTORY, "incident": INCIDENT}  # by variant kind
_METHODS: Final = frozenset({"GET", "HEAD"})


@dataclass(frozen=True, slots=True)
class _Ready:
    """An entry as the route answers it: in full, and as 304 to a reader who has it."""

    key: Key
    entry: Entry
    full: Answer
    not_modified: Answer | None  # None: the entry has no ETag (not a 200)


class FastPages:
    """The fast path of one process's cache; what it answered, by path, is found again
    without parsing the path or building its key."""

    def __init__(self, cache: PageCache) -> None:
        self._cache = cache
        self._ready: dict[str, _Ready] = {}  # by path

    def answer(self, scope: Scope) -> Answer | None:
        path: str = scope["path"]
        if (
            not path.startswith(PREFIX)
            or scope["method"] not in _METHODS
            or scope["query_string"]
            or scope.get("root_path")
        ):
            return None
        ready = self._ready.get(path)
        if ready is not None:
            key = ready.key
            known = self._cache.known_page(key.page)
            if known is None:
                return None
            if known[0] != key.tenant_id:  # deleted, and made again by another tenant
                ready = None
                key = Key(known[0], key.page, key.variant)
        else:
            found = _route(path)
            if found is None:
                return None
            name, variant = found
            known = self._cache.known_page(name)
            if known is None:
                return None
            key = Key(known[0], name, variant)
        if known[1].visibility is not Visibility.PUBLIC:
            return None
        entry = self._cache.fresh(key)
        if entry is None:
            return None
        if ready is None or ready.entry is not entry:
            ready = self._prepare(path, key, entry)
        if ready.not_modified is not None:
            if_none_match = _if_none_match(scope)
            if if_none_match is not None and etag_matches(if_none_match, entry.etag):
                return ready.not_modified
        return ready.full

    def _prepare(self, path: str, key: Key, entry: Entry) -> _Ready:
        route = ROUTES[key.variant[0]]
        headers = {"Cache-Control": PUBLIC_CACHE_CONTROL}
        not_modified = None
        if entry.status_code == 200:
            headers["ETag"] = entry.etag
            unchanged = Response(status_code=304, headers=headers)
            not_modified = Answer(route, 304, unchanged.raw_headers)
        full = Response(entry.body, entry.status_code, headers, media_type=entry.content_type)
        ready = _Ready(
            key,
            entry,
            Answer(route, entry.status_code, full.raw_headers, entry.body),
            not_modified,
        )
        if path not in self._ready and len(self._ready) >= MAX_ENTRIES:
            self._ready.clear()  # rebuilt as readers come back, each once
        self._ready[path] = ready
        return ready


def _route(path: str) -> tuple[str, tuple[str, ...]] | None:
    """The page's name and the cache's variant for `path`, as the public routes match it
    (each parameter one whole path segment), or None."""
    parts = path[len(PREFIX) :].split("/")
    name = parts[0]
    if not name:
        return None
    base = PREFIX + name
    if len(parts) == 1:
        return name, ("page", base)
    if len(parts) == 2 and parts[1] == "history":
        return name, ("history", base)
    if len(parts) == 3 and parts[1] == "incidents" and parts[2]:
        return name, ("incident", base, parts[2])
    return None


def _if_none_match(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"if-none-match":
            header: str = value.decode("latin-1")
            return header
    return None


def fast_path(opened: Opened) -> Answerer:
    """The status pages' `Capability.fast_path`."""
    return FastPages(cast(StatusPagesOpened, opened).cache).answer
