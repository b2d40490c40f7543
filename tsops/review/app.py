"""`recordings serve`: the pages of the review application (Starlette; GET only).

Every page reads the source through the same Store and catalog as the other recordings
commands. What a recording says (every header field, key and line of output) is written by the
person recorded: templates escape everything (autoescape on for every template), fields are
shown through `visible` (controls as ^[ and <U+202E>), the `.cast` goes out as an attachment
of a non-HTML type, and the player renders output as terminal text, never as markup.
"""

from __future__ import annotations

import datetime
import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from tsops.errors import TsopsError, UsageError
from tsops.recordings.cast import CastError, event_time
from tsops.recordings.catalog import Problem, Recording, duration_text, size_text
from tsops.recordings.inert import visible
from tsops.recordings.store import ObjectInfo, RecordingMissing, Store, StoreError
from tsops.review.index import Index, Snapshot
from tsops.review.query import Query, QueryError
from tsops.review.seal import Seal
from tsops.review.security import ASGIApp, SecurityHeaders, TokenGate

if TYPE_CHECKING:
    from tsops.audit.events import Window
    from tsops.audit.timeline import Scope
    from tsops.flows.audit import TimelineReport

HERE = Path(__file__).parent
STATIC = HERE / "static"
PLAYER_FILES = ("vendor/asciinema-player.min.js", "vendor/asciinema-player.css",
                "vendor/LICENSE")
MAX_HITS = 500  # search hits shown on one page
CAST_TYPE = "application/x-asciicast"
ID_RE = re.compile(r"^[^/\\\x00-\x1f\x7f]{1,255}/[^/\\\x00-\x1f\x7f]{1,255}$")


class PlayerMissing(TsopsError):
    """The player's files are not in the package (a checkout without `make setup`)."""


def check_player_files(static: Path = STATIC) -> None:
    """Refuse to start when the web player's files are missing."""
    missing = [name for name in PLAYER_FILES if not (static / name).is_file()]
    if missing:
        raise PlayerMissing(f"the web player's files are missing from {static} "
                            f"({', '.join(missing)}): run `make setup` in the checkout, or "
                            "install tsops from its wheel")


@dataclass
class Review:
    """What the application serves: one source, its catalog, node names, an optional seal."""

    store: Store
    index: Index
    names: dict[str, str] = field(default_factory=dict)
    seal: Seal | None = None
    # The tailnet's audit timeline around these recordings (serve --inventory): the window,
    # the scope and the recordings already read give the report (tsops.flows.audit.timeline).
    timeline: Callable[[Window, Scope, Sequence[Recording]], TimelineReport] | None = None

    @classmethod
    def of(cls, store: Store, names: dict[str, str] | None = None,
           seal: Seal | None = None, refresh: float | None = None,
           timeline: Callable[[Window, Scope, Sequence[Recording]], TimelineReport] | None = None,
           ) -> Review:
        """The review of a store, its catalog read on the first page load."""
        index = Index(store) if refresh is None else Index(store, refresh=refresh)
        return cls(store, index, names or {}, seal, timeline)


class PageError(Exception):
    """A page that cannot be shown: its status and the sentence that says why."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every template, whatever its name
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["shown"] = lambda text: visible(str(text)) if text else ""
    environment.filters["duration"] = duration_text
    environment.filters["size"] = size_text
    environment.filters["when"] = _when
    return environment


def _when(moment: datetime.datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


def key_of(recording_id: str) -> str:
    """The store key of a recording ID from a URL (`NODE/NAME`), or a 404 PageError for
    anything that is not one (a path outside the source never reaches the store)."""
    parts = recording_id.split("/")
    if (not ID_RE.match(recording_id) or any(part in (".", "..") for part in parts)
            or recording_id.endswith(".cast")):
        raise PageError(404, "No such recording",
                        f"{visible(recording_id)!r} is not a recording ID (NODE/NAME as the "
                        "list shows it)")
    return recording_id + ".cast"


class Pages:
    """The request handlers, over one Review."""

    def __init__(self, review: Review) -> None:
        self.review = review
        self.templates = _environment()

    def render(self, template_name: str, status: int = 200, **values: Any) -> HTMLResponse:
        """A page from its template; the source's description and the seal are always there."""
        template = self.templates.get_template(template_name)
        text = template.render(source=self.review.store.description, seal=self.review.seal,
                               has_timeline=self.review.timeline is not None, **values)
        return HTMLResponse(text, status_code=status)

    def guarded(self, handler: Callable[[Request], Response]) -> Callable[[Request], Response]:
        """Turn every known failure into a page that says what went wrong, with its status;
        the server keeps serving."""

        def page(request: Request) -> Response:
            try:
                return handler(request)
            except PageError as error:
                failure = error
            except (QueryError, UsageError) as error:
                failure = PageError(400, "Bad request", error.message)
            except RecordingMissing as error:
                failure = PageError(404, "No such recording", error.message)
            except StoreError as error:
                failure = PageError(503, "The source cannot be read",
                                    f"{error.message} (the page works again once the source "
                                    "answers; reload it)")
            except CastError as error:
                failure = PageError(422, "Damaged recording", str(error))
            except TsopsError as error:
                failure = PageError(500, "Error", error.message)
            return self.render("error.html", failure.status, title=failure.title,
                               message=failure.message)

        return page

    def snapshot(self, request: Request) -> Snapshot:
        """The catalog, listed again when stale or when the page asks (?refresh=1)."""
        return self.review.index.snapshot(fresh=request.query_params.get("refresh") == "1")

    def listing(self, request: Request) -> Response:
        """The list: filters, sort, pages; damaged files flagged below it."""
        query = Query.parse(request.query_params)
        snapshot = self.snapshot(request)
        shown, total = query.select(snapshot.recordings, self.review.names, snapshot.orders)
        pages = max(1, -(-total // query.per_page))
        seal = self.review.seal
        missing = seal.missing({*snapshot.by_key, *snapshot.problems}) if seal else []
        return self.render(
            "list.html", query=query, recordings=shown, total=total, pages=pages,
            all_count=len(snapshot.recordings), damaged=snapshot.damaged,
            problems=snapshot.problems, names=self.review.names, missing=missing,
            with_recorder=any(r.recorder for r in snapshot.recordings),
            seal_of=(lambda r: seal.listed(r.key, r.size)) if seal else None,
            link=_link,
        )

    def search(self, request: Request) -> Response:
        """Lines of recorded output matching a regular expression, each linked to its moment."""
        from tsops.recordings.search import compile_pattern
        from tsops.recordings.search import search as search_text

        query = Query.parse(request.query_params)
        text = request.query_params.get("q", "")
        ignore_case = request.query_params.get("ignore_case") == "1"
        hits: list[tuple[Recording, Any]] = []
        problems: list[Problem] = []
        searched = 0
        if text:
            pattern = compile_pattern(text, ignore_case)
            snapshot = self.snapshot(request)
            every = replace(query, page=1, per_page=max(1, len(snapshot.recordings)))
            targets, _ = every.select(snapshot.recordings, self.review.names)
            for result in search_text(self.review.store, targets, pattern):
                searched += 1
                problems.extend(p for p in result.problems if p.kind != "truncated")
                if result.recording is None:
                    continue
                for match in result.matches:
                    if len(hits) < MAX_HITS:
                        hits.append((result.recording, match))
        return self.render("search.html", query=query, text=text, ignore_case=ignore_case,
                           hits=hits, searched=searched, problems=problems,
                           limited=len(hits) >= MAX_HITS, max_hits=MAX_HITS, link=_link)

    def recording(self, request: Request) -> Response:
        """One recording: the player at the time asked (?t=), its header, seal, download."""
        recording_id = request.path_params["recording_id"]
        key = key_of(recording_id)
        snapshot = self.snapshot(request)
        if not snapshot.holds(key):
            snapshot = self.review.index.snapshot(fresh=True)  # filed since the last listing
        recording = snapshot.recording(key)
        problem = snapshot.damage(key)
        if recording is None:
            if problem is None:
                raise RecordingMissing(f"no recording {recording_id} in "
                                       f"{self.review.store.description}")
            return self.render("damaged.html", 422, recording_id=recording_id,
                               problem=problem, link=_link)
        start = _seconds(request.query_params.get("t", ""), "t")
        speed = _seconds(request.query_params.get("speed", "") or "1", "speed") or 1.0
        seal = self.review.seal
        sealed = (seal.checked(self.review.store, ObjectInfo(key, recording.size))
                  if seal else None)
        return self.render(
            "recording.html", recording=recording, problem=problem, start=start, speed=speed,
            autoplay=request.query_params.get("autoplay") == "1", sealed=sealed,
            name=self.review.names.get(recording.node, ""), link=_link)

    def timeline(self, request: Request) -> Response:
        """The tailnet's policy changes, enrolments, tag changes and removals beside the
        sessions of this source, in time order (`tsops audit timeline`, as a page)."""
        from tsops.audit.events import iso, window
        from tsops.audit.timeline import Scope
        from tsops.tailscale_api import ApiError

        if self.review.timeline is None:
            raise PageError(404, "No timeline", "The timeline reads the tailnet's configuration "
                            "audit log, which needs the inventory: start `tsops recordings serve "
                            "--inventory FILE`.")
        params = request.query_params
        server, user = params.get("server") or None, params.get("user") or None
        if server is not None and user is not None:
            raise UsageError("give a server or a user, not both (neither: the whole tailnet)")
        chosen = window(params.get("since") or None, params.get("until") or None)
        snapshot = self.snapshot(request)
        try:
            report = self.review.timeline(chosen, Scope(server, user), snapshot.recordings)
        except ApiError as error:
            raise PageError(502, "The Tailscale API cannot be read", error.message) from None
        return self.render("timeline.html", report=report, query=params, link=_link, iso=iso)

    def cast(self, request: Request) -> Response:
        """The original .cast file, as an attachment of a non-HTML type."""
        return self._file(request, lambda chunks: chunks)

    def playable(self, request: Request) -> Response:
        """The recording as the player reads it (see `playable`)."""
        return self._file(request, playable)

    def _file(self, request: Request,
              shape: Callable[[Iterator[bytes]], Iterator[bytes]]) -> Response:
        recording_id = request.path_params["recording_id"].removesuffix(".cast")
        key = key_of(recording_id)
        snapshot = self.snapshot(request)
        if not snapshot.holds(key):
            snapshot = self.review.index.snapshot(fresh=True)
            if not snapshot.holds(key):
                raise RecordingMissing(f"no recording {recording_id} in "
                                       f"{self.review.store.description}")
        chunks = iter(self.review.store.chunks(key))
        first = next(chunks, b"")  # a failing source fails here, before the status is sent

        def body() -> Iterator[bytes]:
            yield from shape(itertools.chain([first], chunks))

        name = re.sub(r"[^A-Za-z0-9._-]", "_", key.replace("/", "_"))
        return StreamingResponse(body(), media_type=CAST_TYPE, headers={
            "content-disposition": f'attachment; filename="{name}"'})


def playable(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The header line and every complete event line, as the player needs them: a cut-off
    last line or a line that is not an event would stop asciinema-player from showing any of
    the recording (the list and the page flag that damage; the download keeps every byte)."""
    carry = b""
    header = True
    for chunk in chunks:
        data = carry + chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            carry = data
            continue
        carry = data[cut + 1:]
        kept = []
        for line in data[:cut].split(b"\n"):
            if header or event_time(line) is not None:
                kept.append(line)
                header = False
        if kept:
            yield b"\n".join(kept) + b"\n"
    if header and carry:  # a header line without its newline, and nothing else
        yield carry + b"\n"


def _seconds(text: str, name: str) -> float:
    if not text:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        raise QueryError(f"{name} {text[:40]!r}: expected a number of seconds") from None
    if not 0 <= value < 1e9:
        raise QueryError(f"{name} {value}: expected 0 or more")
    return value


def _link(recording_id: str, **params: object) -> str:
    """The path of a recording's page (its one stable URL), with parameters."""
    from urllib.parse import quote, urlencode

    path = "/r/" + quote(recording_id)
    shown = {name: str(value) for name, value in params.items() if value not in (None, "")}
    return path + (f"?{urlencode(shown)}" if shown else "")


def create_app(review: Review, token: str, *, secure: bool = False,
               cookie: str = "tsops_review") -> ASGIApp:
    """The whole application: token gate and security headers around the GET-only pages."""
    pages = Pages(review)
    routes = [
        Route("/", pages.guarded(pages.listing), methods=["GET"]),
        Route("/search", pages.guarded(pages.search), methods=["GET"]),
        Route("/timeline", pages.guarded(pages.timeline), methods=["GET"]),
        Route("/r/{recording_id:path}", pages.guarded(pages.recording), methods=["GET"]),
        Route("/cast/{recording_id:path}", pages.guarded(pages.cast), methods=["GET"]),
        Route("/play/{recording_id:path}", pages.guarded(pages.playable), methods=["GET"]),
        Route("/favicon.ico", lambda request: Response(status_code=204), methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]

    async def not_found(request: Request, error: Exception) -> Response:
        return pages.render("error.html", 404, title="Not found",
                            message="There is no page at this address.")

    async def not_allowed(request: Request, error: Exception) -> Response:
        return pages.render("error.html", 405, title="Read-only",
                            message="This server only shows recordings: GET is the one "
                            "method it answers.")

    async def crashed(request: Request, error: Exception) -> Response:
        return pages.render("error.html", 500, title="Internal error",
                            message="The page failed; the server goes on serving.")

    application = Starlette(routes=routes, exception_handlers={
        404: not_found, 405: not_allowed, 500: crashed})
    return SecurityHeaders(TokenGate(application, token, cookie, secure))
