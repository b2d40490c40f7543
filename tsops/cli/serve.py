"""`tsops recordings serve`: the review web application, started from the command line.

Starlette and uvicorn are imported here only, when `serve` runs, so `tsops --help` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tsops.cli import console
from tsops.errors import UsageError
from tsops.flows import recordings as flow
from tsops.flows.recordings import RecordingsLocation

if TYPE_CHECKING:
    from tsops.audit.events import Window
    from tsops.audit.timeline import Scope
    from tsops.context import RunContext
    from tsops.flows.audit import TimelineReport
    from tsops.recordings.catalog import Recording


def run_serve(source: RecordingsLocation, listen_address: str, port: int,
              tls_cert: Path | None, tls_key: Path | None, manifest: Path | None,
              public_key: str | None, names: bool) -> None:
    """Check the options, open the source, print the address with its token, serve."""
    from tsops.review.server import Listen, serve

    listen = Listen(listen_address, port, tls_cert, tls_key)
    listen.check()  # exit 2 before anything is opened
    if (manifest is None) != (public_key is None):
        raise UsageError("--manifest and --public-key go together: the seal status needs the "
                         "manifest and the key trusted to have signed it")
    from tsops.review.app import Review, check_player_files

    check_player_files()
    seal = None
    if manifest is not None and public_key is not None:
        from tsops.review.seal import Seal

        seal = Seal.load(manifest, public_key)
    store = flow.open_store(source)
    hostnames = (flow.node_names(source, console.ConsoleEvents(no_input=True)) if names
                 else {})
    review = Review.of(store, hostnames, seal,
                       timeline=_timeline(source.inventory) if source.inventory else None)

    def announce(url: str, base: str) -> None:
        console.line(f"serving the recordings of {store.description} (read-only) at {base}")
        console.line("open this address (its token lets one browser in; keep it private):")
        console.line(f"    {url}")
        console.line("Ctrl-C stops the server")
        console.out.file.flush()

    serve(review, listen, announce)


def _timeline(inventory: Path) -> Callable[[Window, Scope, Sequence[Recording]], TimelineReport]:
    """The timeline page's reader: the inventory's tailnet, opened on the first request (the
    recordings are served even when the API's credentials are not at hand), one at a time."""
    import threading

    from tsops.cli.bootstrap import RunOptions, open_run
    from tsops.flows.audit import timeline

    lock = threading.Lock()
    opened: list[RunContext] = []

    def read(window: Window, scope: Scope, sessions: Sequence[Recording]) -> TimelineReport:
        with lock:
            if not opened:
                opened.append(open_run(RunOptions(path=inventory, limits=[], concurrency=1,
                                                  output="table", no_input=True)))
            return timeline(opened[0], window, scope, None, sessions)

    return read
