"""The `tsops` command: parses arguments, hands off to one module per command, maps errors.

Heavy modules (boto3, fabric, paramiko, pydantic models) are imported inside commands, so that
`tsops --help` and `tsops --version` stay fast.
"""

from __future__ import annotations

import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from tsops import __version__
from tsops.errors import ExitCode, TsopsError, UsageError

if TYPE_CHECKING:
    from tsops.cli.bootstrap import RunOptions
    from tsops.flows.recordings import RecordingsLocation
    from tsops.recordings.integrity import KeySource

app = typer.Typer(
    name="tsops",
    help="Record every SSH session on your servers with Tailscale SSH and tsrecorder.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help text is plain: `s3://BUCKET[/PREFIX]` is not markup
)

_debug = os.environ.get("TSOPS_DEBUG", "") not in ("", "0")


def _finish(code: int | None) -> None:
    """End the command with its exit code (the one way a command module's outcome exits)."""
    if code:
        raise typer.Exit(code)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"tsops {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Show the version."),
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks of unexpected errors.")
    ] = False,
    ssh_timeout: Annotated[
        int | None,
        typer.Option("--ssh-timeout", min=1, max=600, show_default=False, metavar="SECONDS",
                     help="Seconds to wait for each SSH hop's connection, banner, key exchange "
                          "and login (default: the inventory's connection.ssh_timeout, 10)."),
    ] = None,
    api_timeout: Annotated[
        float | None,
        typer.Option("--api-timeout", min=0.1, max=600, metavar="SECONDS",
                     help="How long to wait for each Tailscale API answer (default: the "
                          "inventory's timeouts.api, else 15).", show_default=False),
    ] = None,
) -> None:
    """Record every SSH session on your servers with Tailscale SSH and tsrecorder."""
    global _debug
    _debug = _debug or debug
    if _debug:
        os.environ["TSOPS_DEBUG"] = "1"  # tsops.remote then leaves paramiko's log on
    if ssh_timeout is not None:
        from tsops import remote

        remote.ssh_timeout_override = float(ssh_timeout)
    if api_timeout is not None:
        from tsops.context import OVERRIDES

        OVERRIDES.api_timeout = api_timeout


InventoryArg = Annotated[
    Path, typer.Argument(help="The inventory file (YAML).", show_default=False)
]


# Options shared by several commands, declared once (ranges are checked by Typer: exit 2).
LimitOpt = Annotated[
    list[str] | None,
    typer.Option("--limit", "-l", help="Only these servers: hosts, groups or tags; globs (db*), "
                 "commas and !exclusions (repeatable)."),
]
ConcurrencyOpt = Annotated[
    int, typer.Option("--concurrency", "-c", min=1, help="How many hosts to work on at once.")
]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Apply without asking.")]


def _choose_profile(value: str | None) -> None:
    if value is not None:
        from tsops import s3

        s3.choose(profile=value)


def _choose_s3_timeout(value: float | None) -> None:
    if value is not None:
        from tsops import s3

        s3.choose(timeout=value)


# Every command that reaches S3 takes these; they apply to each S3 client of the run (tsops.s3).
ProfileOpt = Annotated[str | None, typer.Option(
    "--profile", callback=_choose_profile, expose_value=False,
    help="AWS profile for tsops's own S3 calls (default: storage.profile, else AWS_PROFILE or "
         "the default credentials).")]
S3TimeoutOpt = Annotated[float | None, typer.Option(
    "--s3-timeout", min=0.1, max=600, callback=_choose_s3_timeout, expose_value=False,
    help="Seconds to wait for S3 to connect or answer, per attempt (3 attempts; default: "
         "timeouts.s3, else 4).")]
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Show the plan (and any inventory diff); change nothing.")
]
def _renamed(old: str, new: str, why: str = "") -> Any:
    """A hidden option for a renamed one: using it is refused (exit 2) naming the new name."""

    def refuse(value: object) -> None:
        if value not in (None, False):
            raise UsageError(f"{old} is now {new}{why}")

    return typer.Option(old, hidden=True, expose_value=False, callback=refuse)


def _renamed_exitcode(value: bool) -> None:
    if value:
        raise UsageError(
            "--detailed-exitcode is now --changes-exit-code: tsops exits 3 when changes are "
            "pending, where Terraform's flag exits 2 (tsops's 2 means bad input)")


ChangesExitOpt = Annotated[
    bool, typer.Option("--changes-exit-code",
                       help="Exit 3 when changes are pending (0 when none, 1 failed, 2 bad input).")
]
# Terraform's name with Terraform's numbers would read tsops's "bad input" (2) as "changes": the
# old spelling is refused with the new one named, so a CI step copied from Terraform stops early.
RenamedExitOpt = Annotated[
    bool, typer.Option("--detailed-exitcode", hidden=True, callback=_renamed_exitcode,
                       expose_value=False)
]
VerboseOpt = Annotated[
    bool, typer.Option("--verbose", "-v",
                       help="Also show the exact scripts each step runs as root and the files "
                            "it writes (secrets redacted).")]
AllowUnverifiedOpt = Annotated[
    bool,
    typer.Option("--allow-unverified-recorder",
                 help="Write enforceRecorder: true even when no recorder was verified healthy "
                      "(risks locking everyone out)."),
]

AllowGapsOpt = Annotated[
    bool,
    typer.Option("--allow-coverage-gaps",
                 help="Write the policy even when an ssh rule would take sessions to the "
                      "servers first without recording them as asked (the gaps are shown)."),
]


class Output(StrEnum):
    """How results are printed."""

    table = "table"
    json = "json"


OutputOpt = Annotated[Output, typer.Option("--output", "-o", help="How to print results.")]
NoInputOpt = Annotated[
    bool,
    typer.Option("--no-input", help="Never prompt; fail if a secret or confirmation is missing."),
]


_json_output = False  # the command asked for -o json: a failure is then a JSON object too


def _output(value: Output) -> Literal["table", "json"]:
    global _json_output
    _json_output = value is Output.json
    return "json" if _json_output else "table"


def _json_error(message: str, code: int, problems: list[str] | None = None) -> None:
    """In JSON mode, a failure is also one JSON object on stdout (see docs/json.md)."""
    if not _json_output:
        return
    import json

    kind = {ExitCode.FAILED: "failed", ExitCode.BAD_INPUT: "bad-input",
            ExitCode.DRIFT: "drift", 130: "interrupted"}.get(code, "failed")
    error: dict[str, object] = {"kind": kind, "message": message, "exit_code": int(code)}
    if problems:
        error["problems"] = problems
    try:
        sys.stdout.write(json.dumps({"error": error}, indent=2) + "\n")
        sys.stdout.flush()
    except OSError:
        pass


@app.command()
def check(inventory: InventoryArg, output: OutputOpt = Output.table) -> None:
    """Validate an inventory offline: nothing remote is contacted."""
    from tsops.cli.check import run_check

    run_check(inventory, _output(output))


def _run(inventory: Path, limit: list[str] | None, concurrency: int, output: Output,
         no_input: bool, verbose: bool = False) -> RunOptions:
    from tsops.cli.bootstrap import RunOptions

    return RunOptions(path=inventory, limits=limit or [], concurrency=concurrency,
                      output=_output(output), no_input=no_input, verbose=verbose)


@app.command()
def plan(
    inventory: InventoryArg,
    limit: LimitOpt = None,
    concurrency: ConcurrencyOpt = 32,
    output: OutputOpt = Output.table,
    no_input: NoInputOpt = False,
    changes_exit_code: ChangesExitOpt = False,
    verbose: VerboseOpt = False,
    _renamed: RenamedExitOpt = False,
    _profile: ProfileOpt = None, _s3_timeout: S3TimeoutOpt = None,
) -> None:
    """Show what bootstrap would change on each server, and the API calls it would make."""
    from tsops.cli.bootstrap import run_plan

    run = _run(inventory, limit, concurrency, output, no_input, verbose)
    _finish(run_plan(run, detailed_exitcode=changes_exit_code))


@app.command()
def bootstrap(
    inventory: InventoryArg,
    limit: LimitOpt = None,
    concurrency: ConcurrencyOpt = 32,
    output: OutputOpt = Output.table,
    no_input: NoInputOpt = False,
    yes: YesOpt = False,
    dry_run: DryRunOpt = False,
    allow_unverified_recorder: AllowUnverifiedOpt = False,
    allow_coverage_gaps: AllowGapsOpt = False,
    verbose: VerboseOpt = False,
    _profile: ProfileOpt = None, _s3_timeout: S3TimeoutOpt = None,
) -> None:
    """Recorders, their health, servers, then the policy file: plan, confirm, apply, verify."""
    from tsops.cli.bootstrap import run_bootstrap, run_plan

    run = _run(inventory, limit, concurrency, output, no_input, verbose)
    if dry_run:
        _finish(run_plan(run, detailed_exitcode=False))
        return
    _finish(run_bootstrap(run, yes=yes, allow_unverified=allow_unverified_recorder,
                          allow_gaps=allow_coverage_gaps))


secrets_app = typer.Typer(
    help="Keep secrets in the OS keyring; values are never read from the command line.",
    no_args_is_help=True,
)
app.add_typer(secrets_app, name="secrets")

EntryArg = Annotated[
    str,
    typer.Argument(
        metavar="SERVICE/NAME", help="The keyring entry, e.g. tsops/api-token.", show_default=False
    ),
]


@secrets_app.command("set")
def secrets_set(entry: EntryArg) -> None:
    """Store a secret typed at a hidden prompt, or piped on standard input."""
    from tsops.cli.secrets import run_set

    run_set(entry)


@secrets_app.command("get")
def secrets_get(
    entry: EntryArg,
    reveal: Annotated[bool, typer.Option("--reveal", help="Print the secret itself.")] = False,
) -> None:
    """Say whether a secret is set; print it only with --reveal."""
    from tsops.cli.secrets import run_get

    run_get(entry, reveal=reveal)


@secrets_app.command("delete")
def secrets_delete(entry: EntryArg) -> None:
    """Delete a secret (succeeds when it was not set)."""
    from tsops.cli.secrets import run_delete

    run_delete(entry)


@secrets_app.command("list")
def secrets_list(output: OutputOpt = Output.table) -> None:
    """List the entries tsops stored (names only)."""
    from tsops.cli.secrets import run_list

    run_list(_output(output))


def command() -> Any:
    """The Click command tree of `tsops`, its values named for operators (tsops.cli.help)."""
    from tsops.cli.completion import enable_if_completing
    from tsops.cli.help import name_values

    enable_if_completing()
    tree = typer.main.get_command(app)
    name_values(tree)
    _stop_quietly_on_closed_output(tree)
    return tree


def _stop_quietly_on_closed_output(command: Any) -> None:
    """A reader that went away (`tsops recordings list | head`) ends the command with exit 0.

    Click would exit 1 for it, which `set -o pipefail` scripts read as a failure. Standard
    output is pointed at /dev/null first, so the flush at exit cannot fail again.
    """
    callback = getattr(command, "callback", None)
    if callback is not None and not getattr(callback, "_tsops_pipe_safe", False):

        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return callback(*args, **kwargs)
            except BrokenPipeError:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                raise typer.Exit(0) from None

        guarded._tsops_pipe_safe = True  # type: ignore[attr-defined]
        command.callback = guarded
    for sub in getattr(command, "commands", {}).values():
        _stop_quietly_on_closed_output(sub)


def main() -> None:
    """Entry point: run the app, exit with one code, and log a changing command's run."""
    import datetime
    import signal

    from tsops import runlog

    started = datetime.datetime.now(datetime.UTC)
    _interrupt.started = started
    code: int = ExitCode.FAILED
    previous = signal.signal(signal.SIGINT, _on_interrupt)
    try:
        _main()
        code = ExitCode.OK
    except SystemExit as ended:
        code = ended.code if isinstance(ended.code, int) else (
            ExitCode.OK if ended.code is None else ExitCode.FAILED)
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
        if _interrupt.seen:
            _exit_interrupted()  # never returns
        try:
            runlog.record(sys.argv[1:], started, code)
        except OSError as error:
            from tsops.cli import console

            console.warning(f"the run log {runlog.path()} was not written: {error.strerror}")


class _Interrupt:
    """Ctrl-C's state: seen, reported (once), and when the command started (for the run log)."""

    def __init__(self) -> None:
        import datetime
        import threading

        self.seen = False
        self.reported = False
        self.lock = threading.RLock()  # the signal handler may run while the main thread holds it
        self.started = datetime.datetime.now(datetime.UTC)


_interrupt = _Interrupt()
# After Ctrl-C the main thread unwinds (finally blocks, closing connections); threads still
# connecting or running a command on a host are abandoned, not waited for: past this grace the
# process ends anyway, so Ctrl-C never takes more than about a second.
INTERRUPT_GRACE_S = 0.8


def _on_interrupt(signum: int, frame: object) -> None:
    """SIGINT: the first one unwinds the main thread (KeyboardInterrupt) and arms the exit; a
    second one exits at once."""
    import threading

    if _interrupt.seen:
        _exit_interrupted()
    _interrupt.seen = True
    timer = threading.Timer(INTERRUPT_GRACE_S, _exit_interrupted)
    timer.daemon = True
    timer.start()
    raise KeyboardInterrupt


def _report_interrupted() -> None:
    """The one line (and the JSON error) an interrupted command prints, printed once."""
    with _interrupt.lock:
        if _interrupt.reported:
            return
        _interrupt.reported = True
    from tsops.cli import console

    console.error("interrupted")
    _json_error("interrupted", 130)


def _exit_interrupted() -> None:
    """End an interrupted command now: its one line, the run log, exit 130, without waiting
    for threads still busy with hosts (a hung sshd, a running command)."""
    import contextlib

    from tsops import runlog

    _report_interrupted()
    with _interrupt.lock:  # the main thread and the timer may both get here: log once
        with contextlib.suppress(OSError):
            runlog.record(sys.argv[1:], _interrupt.started, 130)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(130)


def _main() -> None:
    """Run the app and turn every outcome into one exit code."""
    from tsops.cli import console

    try:
        # Typer's standalone mode reports usage errors itself (exit 2) and exits via SystemExit.
        command()(prog_name="tsops", complete_var="_TSOPS_COMPLETE")
    except SystemExit as ended:
        # Typer ends a help screen written to a closed pipe with exit 1, after it wrapped
        # stdout to silence the flush at exit: a reader that went away is no failure here either.
        if ended.code == 1 and type(sys.stdout).__name__ == "PacifyFlushWrapper":
            sys.exit(0)
        raise
    except TsopsError as error:
        console.error(error.message)
        _json_error(error.message, error.exit_code, getattr(error, "problems", None))
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        _report_interrupted()
        sys.exit(130)
    except Exception as error:
        if _debug:
            raise
        console.error(
            f"internal error: {type(error).__name__}: {error}\n"
            "This is a bug in tsops; rerun with --debug for the traceback."
        )
        _json_error(f"internal error: {type(error).__name__}: {error}", ExitCode.FAILED)
        sys.exit(ExitCode.FAILED)


# The tailnet policy file (issue 6): diff, apply, rollback.
policy_app = typer.Typer(
    help="Patch the tailnet policy file: the ssh rules tsops manages and the tags they need.",
    no_args_is_help=True,
)
app.add_typer(policy_app, name="policy")


@policy_app.command("diff")
def policy_diff(
    inventory: InventoryArg,
    no_input: NoInputOpt = False,
    changes_exit_code: ChangesExitOpt = False,
    output: OutputOpt = Output.table,
    _renamed: RenamedExitOpt = False,
) -> None:
    """Show the unified diff tsops would make to the policy file; nothing is written."""
    from tsops.cli.policy import run_diff

    _finish(run_diff(inventory, no_input=no_input, detailed_exitcode=changes_exit_code,
                     output=_output(output)))


@policy_app.command("apply")
def policy_apply(
    inventory: InventoryArg,
    no_input: NoInputOpt = False,
    yes: YesOpt = False,
    allow_unverified_recorder: AllowUnverifiedOpt = False,
    allow_coverage_gaps: AllowGapsOpt = False,
    output: OutputOpt = Output.table,
    _profile: ProfileOpt = None, _s3_timeout: S3TimeoutOpt = None,
) -> None:
    """Patch the policy file: show the diff, confirm, validate, write with If-Match."""
    from tsops.cli.policy import run_apply

    run_apply(inventory, no_input=no_input, yes=yes, allow_unverified=allow_unverified_recorder,
              allow_gaps=allow_coverage_gaps, output=_output(output))


@policy_app.command("rollback")
def policy_rollback(
    inventory: InventoryArg,
    no_input: NoInputOpt = False,
    yes: YesOpt = False,
    to: Annotated[
        int | None,
        typer.Option("--write", "-w", help="Undo this write (see --list); default the latest."),
    ] = None,
    list_only: Annotated[
        bool, typer.Option("--list", help="List the policy writes tsops kept, and stop.")
    ] = False,
    output: OutputOpt = Output.table,
) -> None:
    """Put the policy back as it was before a write by tsops (kept in the state directory)."""
    from tsops.cli.policy import run_rollback

    run_rollback(inventory, no_input=no_input, yes=yes, number=to, list_only=list_only,
                 output=_output(output))


recordings_app = typer.Typer(
    help="Review recorded sessions where tsrecorder stored them: S3 or a local directory.",
    no_args_is_help=True,
)
app.add_typer(recordings_app, name="recordings")

FromOpt = Annotated[
    str | None,
    typer.Option("--from", help="s3://BUCKET[/PREFIX] or a local directory of recordings."),
]
RecInventoryOpt = Annotated[
    Path | None, typer.Option("--inventory", "-i", help="Read the inventory's storage instead.")
]
EndpointOpt = Annotated[
    str | None, typer.Option("--endpoint", help="S3 endpoint URL (S3-compatible stores).")
]
RegionOpt = Annotated[str | None, typer.Option("--region", help="S3 region.")]
NodeOpt = Annotated[
    list[str] | None, typer.Option("--node", help="Only this node ID or name (repeatable).")
]
UserOpt = Annotated[
    list[str] | None,
    typer.Option("--user", help="Only sessions of this SSH, local or source user (repeatable)."),
]
SinceOpt = Annotated[
    str | None, typer.Option("--since", help="Started at or after: ISO date/time or 24h, 7d.")
]
UntilOpt = Annotated[
    str | None, typer.Option("--until", help="Started before: ISO date/time or an age.")
]
CommandOpt = Annotated[
    str | None, typer.Option("--command", help="Only sessions whose command contains this.")
]
PodOpt = Annotated[
    list[str] | None,
    typer.Option("--pod", help="Only kubectl sessions to this POD or NAMESPACE/POD (repeatable)."),
]
NamespaceOpt = Annotated[
    list[str] | None,
    typer.Option("--namespace", help="Only kubectl sessions in this namespace (repeatable)."),
]
ContainerOpt = Annotated[
    list[str] | None,
    typer.Option("--container", help="Only kubectl sessions to this container (repeatable)."),
]
SessionTypeOpt = Annotated[
    list[str] | None,
    typer.Option("--session-type", help="ssh, exec or attach (kubectl) (repeatable)."),
]
NamesOpt = Annotated[
    bool,
    typer.Option("--names", help="Show node names from the tailnet API (needs --inventory)."),
]
RawOpt = Annotated[
    bool,
    typer.Option("--raw", help="Pass every recorded escape sequence to the terminal (unsafe)."),
]
RecordingArg = Annotated[
    str, typer.Argument(metavar="ID", help="NODE/NAME as `list` shows it.", show_default=False)
]


def _where(location: str | None, inventory: Path | None, endpoint: str | None,
           region: str | None) -> RecordingsLocation:
    from tsops.flows.recordings import RecordingsLocation

    return RecordingsLocation(location, inventory, endpoint, region)


@recordings_app.command("list")
def recordings_list(
    location: FromOpt = None, inventory: RecInventoryOpt = None, endpoint: EndpointOpt = None,
    region: RegionOpt = None, node: NodeOpt = None, user: UserOpt = None,
    since: SinceOpt = None, until: UntilOpt = None, command: CommandOpt = None,
    pod: PodOpt = None, namespace: NamespaceOpt = None, container: ContainerOpt = None,
    session_type: SessionTypeOpt = None,
    sort: Annotated[
        str, typer.Option("--sort", help="start, node, user, duration or size.")
    ] = "start",
    reverse: Annotated[bool, typer.Option("--reverse", help="Newest/largest first.")] = False,
    output: OutputOpt = Output.table,
    names: NamesOpt = False,
    _profile: ProfileOpt = None, _s3_timeout: S3TimeoutOpt = None,
) -> None:
    """One row per recording, read from its first and last bytes only."""
    from tsops.cli.recordings import make_filter, run_list

    chosen = make_filter(node or [], user or [], since, until, command, pod or [],
                         namespace or [], container or [], session_type or [])
    run_list(_where(location, inventory, endpoint, region), chosen, sort, reverse,
             _output(output), names)


@recordings_app.command("show")
def recordings_show(
    recording: RecordingArg, location: FromOpt = None, inventory: RecInventoryOpt = None,
    endpoint: EndpointOpt = None, region: RegionOpt = None, output: OutputOpt = Output.table,
    _profile: ProfileOpt = None, _s3_timeout: S3TimeoutOpt = None,
) -> None:
    """What one recording's header and last event say."""
    from tsops.cli.recordings import run_show

    run_show(_where(location, inventory, endpoint, region), recording, _output(output))


@recordings_app.command("cat")
def recordings_cat(
    recording: RecordingArg, location: FromOpt = None, inventory: RecInventoryOpt = None,
    endpoint: EndpointOpt = None, region: RegionOpt = None,
    plain: Annotated[
        bool, typer.Option("--plain", help="Remove terminal escape sequences.")
    ] = False,
    raw: RawOpt = False,
    _profile: ProfileOpt = None, _s3_timeout: S3TimeoutOpt = None,
) -> None:
    """Write a recording's output text, without timing (safe sequences only)."""
    from tsops.cli.recordings import run_cat

    run_cat(_where(location, inventory, endpoint, region), recording, plain, raw)


@recordings_app.command("play")
def recordings_play(
    recording: RecordingArg, location: FromOpt = None, inventory: RecInventoryOpt = None,
    endpoint: EndpointOpt = None, region: RegionOpt = None,
    speed: Annotated[float, typer.Option("--speed", "-s", help="Speed factor.")] = 1.0,
    idle_limit: Annotated[
        float | None, typer.Option("--idle-limit", help="Cap pauses at this many seconds.")
    ] = None,
    raw: RawOpt = False,
    _profile: ProfileOpt = None, _s3_timeout: S3TimeoutOpt = None,
) -> None:
    """Replay a recording with its timing (safe sequences only); space pauses, q quits."""
    from tsops.cli.recordings import run_play

    run_play(_where(location, inventory, endpoint, region), recording, speed, idle_limit, raw)


class ExportFormat(StrEnum):
    """Event formats of `recordings export`."""

    jsonl = "jsonl"
    ecs = "ecs"


@recordings_app.command("export")
def recordings_export(
    location: FromOpt = None, inventory: RecInventoryOpt = None, endpoint: EndpointOpt = None,
    region: RegionOpt = None, node: NodeOpt = None, user: UserOpt = None,
    since: SinceOpt = None, until: UntilOpt = None, command: CommandOpt = None,
    pod: PodOpt = None, namespace: NamespaceOpt = None, container: ContainerOpt = None,
    session_type: SessionTypeOpt = None,
    form: Annotated[
        ExportFormat, typer.Option("--format", help="jsonl (tsops fields) or ecs.")
    ] = ExportFormat.jsonl,
    text: Annotated[bool, typer.Option("--text", help="Include the plain text.")] = False,
    checkpoint: Annotated[
        Path | None,
        typer.Option("--checkpoint", help="Remember exported sessions here; skip them next time."),
    ] = None,
    names: NamesOpt = False,
    _profile: ProfileOpt = None, _s3_timeout: S3TimeoutOpt = None,
) -> None:
    """One JSON event per session on stdout, for a SIEM."""
    from tsops.cli.recordings import make_filter, run_export

    chosen = make_filter(node or [], user or [], since, until, command, pod or [],
                         namespace or [], container or [], session_type or [])
    run_export(_where(location, inventory, endpoint, region), chosen,
               "ecs" if form is ExportFormat.ecs else "jsonl", text, checkpoint, names)


@recordings_app.command("search")
def recordings_search(
    pattern: Annotated[str, typer.Argument(help="A Python regular expression, per line.")],
    location: FromOpt = None, inventory: RecInventoryOpt = None, endpoint: EndpointOpt = None,
    region: RegionOpt = None, node: NodeOpt = None, user: UserOpt = None,
    since: SinceOpt = None, until: UntilOpt = None, command: CommandOpt = None,
    pod: PodOpt = None, namespace: NamespaceOpt = None, container: ContainerOpt = None,
    session_type: SessionTypeOpt = None,
    ignore_case: Annotated[bool, typer.Option(
        "--ignore-case", help="Match regardless of case (-i is --inventory, as everywhere).")
    ] = False,
    context: Annotated[int, typer.Option("--context", "-C", help="Lines around.")] = 0,
    output: OutputOpt = Output.table,
    _profile: ProfileOpt = None, _s3_timeout: S3TimeoutOpt = None,
) -> None:
    """Find lines of recorded output, with session, time offset and context."""
    from tsops.cli.recordings import make_filter, run_search

    chosen = make_filter(node or [], user or [], since, until, command, pod or [],
                         namespace or [], container or [], session_type or [])
    run_search(_where(location, inventory, endpoint, region), chosen, pattern, ignore_case,
               context, _output(output))


ManifestOpt = Annotated[
    Path | None,
    typer.Option("--manifest", "-m", help="The signed manifest file.", show_default=False),
]
ManifestDirOpt = Annotated[
    Path | None, typer.Option(
        "--manifest-dir", help="A directory of chained manifests, one per seal, named by time.")
]
PreviousOpt = Annotated[
    Path | None,
    typer.Option("--previous", help="The manifest before --manifest: the chain's last link."),
]
SealKeyOpt = Annotated[
    str | None, typer.Option(
        "--key", help="Keyring entry of the Ed25519 sealing key.  [default: "
        "tsops/recordings-seal-key]", show_default=False)
]
KeyFileOpt = Annotated[
    Path | None,
    typer.Option("--key-file", help="The sealing key in a file (mode 0600 or stricter, yours)."),
]
KeyEnvOpt = Annotated[
    str | None,
    typer.Option("--key-env", help="The sealing key in this environment variable (base64)."),
]


def _key_source(key: str | None, key_file: Path | None, key_env: str | None) -> KeySource:
    from tsops.recordings.integrity import KeySource

    return KeySource.chosen(key, key_file, key_env)


@recordings_app.command("seal")
def recordings_seal(
    manifest: ManifestOpt = None, location: FromOpt = None, inventory: RecInventoryOpt = None,
    endpoint: EndpointOpt = None, region: RegionOpt = None,
    key: SealKeyOpt = None, key_file: KeyFileOpt = None, key_env: KeyEnvOpt = None,
    manifest_dir: ManifestDirOpt = None, previous: PreviousOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing --manifest file.")
    ] = False,
    _profile: ProfileOpt = None, _s3_timeout: S3TimeoutOpt = None,
) -> None:
    """Write a manifest of every recording's SHA-256, signed, linked to the previous one."""
    from tsops.cli.recordings import run_seal

    run_seal(_where(location, inventory, endpoint, region), manifest,
             _key_source(key, key_file, key_env), previous, manifest_dir, force)


@recordings_app.command("verify")
def recordings_verify(
    manifest: ManifestOpt = None, location: FromOpt = None, inventory: RecInventoryOpt = None,
    endpoint: EndpointOpt = None, region: RegionOpt = None,
    key: SealKeyOpt = None, key_file: KeyFileOpt = None, key_env: KeyEnvOpt = None,
    public_key: Annotated[
        str | None, typer.Option("--public-key", help="Trust this key (base64 or a file).")
    ] = None,
    manifest_dir: ManifestDirOpt = None, previous: PreviousOpt = None,
    output: OutputOpt = Output.table,
    _profile: ProfileOpt = None, _s3_timeout: S3TimeoutOpt = None,
) -> None:
    """Check the manifest or chain: exit 3 when recordings are missing, altered or unexpected."""
    from tsops.cli import console
    from tsops.cli.recordings import run_verify
    from tsops.errors import UsageError
    from tsops.flows.recordings import DriftFound

    mode = _output(output)
    if public_key is not None and (key, key_file, key_env) != (None, None, None):
        raise UsageError("--public-key is the key trusted; it excludes --key, --key-file and "
                         "--key-env (which derive it from the private key)")
    try:
        run_verify(_where(location, inventory, endpoint, region), manifest,
                   _key_source(key, key_file, key_env), public_key, mode, previous,
                   manifest_dir)
    except DriftFound as drift:
        if mode != "json":
            raise
        console.error(drift.message)  # the findings printed are the one JSON document
        raise typer.Exit(drift.exit_code) from None


@recordings_app.command("public-key")
def recordings_public_key(
    key: SealKeyOpt = None, key_file: KeyFileOpt = None, key_env: KeyEnvOpt = None,
) -> None:
    """Print the sealing key's public key (one line of base64) for auditors."""
    from tsops.cli.recordings import run_public_key

    run_public_key(_key_source(key, key_file, key_env))


@recordings_app.command("new-key")
def recordings_new_key(key: SealKeyOpt = None, key_file: KeyFileOpt = None) -> None:
    """Make a sealing key in a file (0600) or keyring entry, never over one."""
    from tsops.cli.recordings import run_new_key

    run_new_key(_key_source(key, key_file, None))


@recordings_app.command("serve")
def recordings_serve(
    location: FromOpt = None, inventory: RecInventoryOpt = None, endpoint: EndpointOpt = None,
    region: RegionOpt = None,
    listen: Annotated[str, typer.Option(
        "--listen", metavar="ADDR",
        help="Address to serve on; beyond loopback only with --tls-cert/--tls-key.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", metavar="PORT", help="TCP port (0: any free one).")
    ] = 8737,
    tls_cert: Annotated[
        Path | None, typer.Option(
            "--tls-cert", metavar="FILE", help="Serve HTTPS with this certificate (PEM).")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(
            "--tls-key", metavar="FILE", help="The certificate's private key (PEM).")
    ] = None,
    manifest: Annotated[Path | None, typer.Option(
        "--manifest", "-m", help="Show each recording's seal status from this manifest.")
    ] = None,
    public_key: Annotated[str | None, typer.Option(
        "--public-key", help="The key trusted to have signed --manifest (base64 or a file).")
    ] = None,
    names: NamesOpt = False,
) -> None:
    """Review recordings in a browser: list, search, replay (read-only, token required)."""
    from tsops.cli.serve import run_serve

    run_serve(_where(location, inventory, endpoint, region), listen, port, tls_cert, tls_key,
              manifest, public_key, names)


recorder_app = typer.Typer(help="The session recorders and their storage.", no_args_is_help=True)
app.add_typer(recorder_app, name="recorder")


@recorder_app.command("iam-policy")
def recorder_iam_policy(inventory: InventoryArg) -> None:
    """Print the least-privilege IAM policy for the recorder's S3 credentials."""
    from tsops.cli.recorder import run_iam_policy

    run_iam_policy(inventory)


@app.command()
def status(
    inventory: InventoryArg,
    limit: LimitOpt = None,
    concurrency: ConcurrencyOpt = 32,
    output: OutputOpt = Output.table,
    no_input: NoInputOpt = False,
    _profile: ProfileOpt = None, _s3_timeout: S3TimeoutOpt = None,
) -> None:
    """Check servers, recorders and the policy read-only: exit 0 clean, 3 drift, 1 error."""
    from tsops.cli.status import run_status

    _finish(run_status(_run(inventory, limit, concurrency, output, no_input)))


DEFAULT_CANARY_TIMEOUT = 30.0
CanaryTimeoutOpt = Annotated[float, typer.Option(
    "--canary-timeout", help="Seconds to wait for the canary's recording to appear.")]
OldTimeoutOpt = Annotated[str | None, _renamed("--timeout", "--canary-timeout")]


@app.command()
def verify(
    inventory: InventoryArg,
    limit: LimitOpt = None,
    user: Annotated[str | None, typer.Option(
        "--canary-user", help="Local user of the canary sessions (default: the inventory's "
        "canary.user, else each rule's first concrete user, like root).")] = None,
    timeout: CanaryTimeoutOpt = DEFAULT_CANARY_TIMEOUT,
    concurrency: ConcurrencyOpt = 8,
    output: OutputOpt = Output.table,
    no_input: NoInputOpt = False,
    _old_user: Annotated[str | None, _renamed(
        "--user", "--canary-user", " (as on add-server, where --user is the SSH user)")] = None,
    _old_timeout: OldTimeoutOpt = None,
    _profile: ProfileOpt = None, _s3_timeout: S3TimeoutOpt = None,
) -> None:
    """Prove each server recorded: a canary session, then its recording at the destination."""
    from tsops.cli.verify import run_verify

    _finish(run_verify(inventory, limit or [], user, timeout, concurrency, no_input,
                       _output(output)))


HostArg = Annotated[str, typer.Argument(help="The server's name (a lowercase hostname).",
                                        show_default=False)]


@app.command("add-server")
def add_server(
    inventory: InventoryArg,
    host: HostArg,
    tag: Annotated[list[str] | None, typer.Option(
        "--tag", help="An extra tag for this host, like tag:web (repeatable).")] = None,
    group: Annotated[str | None, typer.Option(
        "--group", help="Add it to this server group (servers.groups).")] = None,
    user: Annotated[str | None, typer.Option("--user", help="SSH user for this host.")] = None,
    port: Annotated[int | None, typer.Option("--port", help="SSH port for this host.")] = None,
    address: Annotated[str | None, typer.Option(
        "--address", help="Where to reach it over SSH (default: its name).")] = None,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    no_input: NoInputOpt = False,
    allow_unverified_recorder: AllowUnverifiedOpt = False,
    allow_coverage_gaps: AllowGapsOpt = False,
    skip_canary: Annotated[bool, typer.Option(
        "--skip-canary", help="Do not prove the new server is recorded (see tsops verify).")
    ] = False,
    canary_user: Annotated[str | None, typer.Option(
        "--canary-user", help="Local user of the canary session (default: the inventory's "
        "canary.user, else the rule's first concrete user, like root).")] = None,
    canary_timeout: CanaryTimeoutOpt = DEFAULT_CANARY_TIMEOUT,
    output: OutputOpt = Output.table,
    _old_timeout: OldTimeoutOpt = None,
    _profile: ProfileOpt = None, _s3_timeout: S3TimeoutOpt = None,
) -> None:
    """Add a server to the inventory, enroll it alone, extend the policy, prove it recorded."""
    from tsops.cli.servers import run_add_server
    from tsops.inventory.edit import NewHost

    mode = _output(output)
    new = NewHost(host, group=group, tags=tuple(tag or ()), user=user, port=port,
                  address=address)
    _finish(run_add_server(inventory, new, dry_run=dry_run, yes=yes, no_input=no_input,
                   allow_unverified=allow_unverified_recorder, allow_gaps=allow_coverage_gaps,
                   canary=not skip_canary, canary_user=canary_user,
                   canary_timeout=canary_timeout, output=mode))


@app.command("remove-server")
def remove_server(
    inventory: InventoryArg,
    host: HostArg,
    logout: Annotated[bool, typer.Option(
        "--logout", help="Run `tailscale logout` on the host first.")] = False,
    uninstall: Annotated[bool, typer.Option(
        "--uninstall", help="Log out, stop tailscaled and remove the package.")] = False,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    no_input: NoInputOpt = False,
    output: OutputOpt = Output.table,
) -> None:
    """Take a server out of recording: inventory, its device in the tailnet, optionally logout."""
    from tsops.cli.servers import run_remove_server

    _finish(run_remove_server(inventory, host, logout=logout, uninstall=uninstall, dry_run=dry_run,
                      yes=yes, no_input=no_input, output=_output(output)))


class LockMode(StrEnum):
    """S3 Object Lock modes for a new bucket."""

    compliance = "compliance"
    governance = "governance"
    off = "off"


@app.command("rotate-storage")
def rotate_storage(
    inventory: InventoryArg,
    to: Annotated[str | None, typer.Option(
        "--to", help="The new destination: s3://BUCKET or an absolute directory.",
        show_default=False)] = None,
    delete_source: Annotated[str | None, typer.Option(
        "--delete-source", metavar="OLD_DST",
        help="Instead: delete the recordings of an earlier destination that the current one "
             "holds with the same SHA-256.", show_default=False)] = None,
    migrate: Annotated[bool, typer.Option(
        "--migrate", help="Copy every existing recording there, verified by SHA-256; rerun "
                          "to resume.")] = False,
    endpoint: Annotated[str | None, typer.Option(
        "--endpoint", help="S3 endpoint URL of the new bucket (default: the current one).")
    ] = None,
    region: Annotated[str | None, typer.Option(
        "--region", help="Region of the new bucket (default: the current one).")] = None,
    allow_plain_http: Annotated[bool, typer.Option(
        "--allow-plain-http", help="Allow an http:// --endpoint (lab stores only).")] = False,
    access_key_env: Annotated[str | None, typer.Option(
        "--access-key-env", help="Environment variable NAME holding the recorder's access key "
                                 "id.")] = None,
    secret_key_env: Annotated[str | None, typer.Option(
        "--secret-key-env", help="Environment variable NAME holding the recorder's secret "
                                 "key.")] = None,
    access_key_keyring: Annotated[str | None, typer.Option(
        "--access-key-keyring", help="Keyring entry SERVICE/NAME of the access key id.")] = None,
    secret_key_keyring: Annotated[str | None, typer.Option(
        "--secret-key-keyring", help="Keyring entry SERVICE/NAME of the secret key.")] = None,
    object_lock: Annotated[LockMode | None, typer.Option(
        "--object-lock", help="Object Lock of a new bucket (default: the current setting).")
    ] = None,
    retention_days: Annotated[int | None, typer.Option(
        "--retention-days", help="Default retention with --object-lock.")] = None,
    workers: Annotated[int, typer.Option(
        "--concurrency", "-c", min=1,
        help="Recordings copied (or checked) at once by --migrate and --delete-source.")] = 8,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    no_input: NoInputOpt = False,
    output: OutputOpt = Output.table,
    _old_workers: Annotated[str | None, _renamed("--workers", "--concurrency")] = None,
    _profile: ProfileOpt = None, _s3_timeout: S3TimeoutOpt = None,
) -> None:
    """Move the recorders to a new destination one at a time, then update the inventory."""
    from tsops.cli.rotate import run_delete_source, run_rotate
    from tsops.rotation.target import RotateOptions

    mode = _output(output)
    if (to is None) == (delete_source is None):
        raise UsageError("give exactly one of --to DST (rotate) or --delete-source OLD_DST")
    if delete_source is not None:
        _finish(run_delete_source(inventory, delete_source, dry_run=dry_run, yes=yes,
                                  no_input=no_input, workers=workers, output=mode))
        return
    assert to is not None
    options = RotateOptions(
        to=to, endpoint=endpoint, region=region, allow_plain_http=allow_plain_http,
        access_key_env=access_key_env, secret_key_env=secret_key_env,
        access_key_keyring=access_key_keyring, secret_key_keyring=secret_key_keyring,
        object_lock=object_lock.value if object_lock is not None else None,
        retention_days=retention_days, migrate=migrate)
    _finish(run_rotate(inventory, options, dry_run=dry_run, yes=yes, no_input=no_input,
                       workers=workers, output=mode))


class Shell(StrEnum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


@app.command()
def completion(
    shell: Annotated[Shell, typer.Argument(metavar="bash|zsh|fish", help="Your shell.",
                                           show_default=False)],
    install: Annotated[bool, typer.Option(
        "--install", help="Write it where the shell loads completions from (no startup file "
        "is edited) instead of printing it.")] = False,
) -> None:
    """Print (or install) the shell completion script for commands, options and values."""
    from tsops.cli import completion as shells
    from tsops.cli import console

    if not install:
        sys.stdout.write(shells.script(shell.value))
        return
    path, loaded = shells.install(shell.value)
    console.line(f"wrote {path}: {loaded}")


inventory_app = typer.Typer(help="Bring hosts into a tsops inventory from elsewhere.",
                            no_args_is_help=True)
import_app = typer.Typer(help="Import hosts from another tool's inventory.", no_args_is_help=True)
inventory_app.add_typer(import_app, name="import")
app.add_typer(inventory_app, name="inventory")


@import_app.command("ansible")
def inventory_import_ansible(
    source: Annotated[Path, typer.Argument(
        metavar="ANSIBLE_INVENTORY", help="An Ansible inventory file, INI or YAML.",
        show_default=False)],
    base: Annotated[Path | None, typer.Option(
        "--base", metavar="INVENTORY", help="Keep everything of this tsops inventory but its "
        "servers (default: a skeleton to complete).")] = None,
    to: Annotated[Path | None, typer.Option(
        "--to", metavar="FILE", help="Write the inventory here (default: standard output).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --to file.")
    ] = False,
) -> None:
    """Write a tsops inventory whose servers are an Ansible inventory's hosts."""
    from tsops.cli.inventory_import import run_import_ansible

    run_import_ansible(source, base=base, to=to, force=force)


# The audit trail beside the recordings (issue 19): the configuration audit log, one timeline.
audit_app = typer.Typer(
    help="Who changed what, and when, beside the recorded sessions: the configuration audit "
         "log and one timeline.",
    no_args_is_help=True,
)
app.add_typer(audit_app, name="audit")

AuditSinceOpt = Annotated[str | None, typer.Option(
    "--since", help="Window start: ISO date/time or an age like 24h, 7d (default 7d).")]
AuditUntilOpt = Annotated[str | None, typer.Option(
    "--until", help="Window end: ISO date/time or an age (default now).")]


class TimelineOutput(StrEnum):
    """How `audit timeline` prints."""

    table = "table"
    json = "json"
    ecs = "ecs"


@audit_app.command("log")
def audit_log(
    inventory: InventoryArg,
    since: AuditSinceOpt = None,
    until: AuditUntilOpt = None,
    actor: Annotated[list[str] | None, typer.Option(
        "--actor", help="Only changes by this login name, display name or id (substring; "
        "repeatable).")] = None,
    action: Annotated[list[str] | None, typer.Option(
        "--action", help="Only this action (CREATE, UPDATE, DELETE) or kind (policy, "
        "enrolment, tags, removal, auth-key, log-streaming) (repeatable).")] = None,
    target: Annotated[list[str] | None, typer.Option(
        "--target", help="Only changes to this target name, id or type (substring; "
        "repeatable).")] = None,
    output: OutputOpt = Output.table,
    no_input: NoInputOpt = False,
) -> None:
    """The configuration audit events of a window; policy diffs from tsops's history."""
    from tsops.cli.audit import run_log

    _finish(run_log(inventory, since, until, actor or [], action or [], target or [],
                    _output(output), no_input))


@audit_app.command("timeline")
def audit_timeline(
    inventory: InventoryArg,
    since: AuditSinceOpt = None,
    until: AuditUntilOpt = None,
    server: Annotated[str | None, typer.Option(
        "--server", help="Only this server (host name or node ID); policy changes always.")
    ] = None,
    user: Annotated[str | None, typer.Option(
        "--user", help="Only changes and sessions of this user (login, SSH or local user).")
    ] = None,
    recordings: Annotated[str | None, typer.Option(
        "--recordings", help="Where the sessions are: s3://BUCKET[/PREFIX] or a directory "
        "(default: the inventory's storage, when readable from here).")] = None,
    output: Annotated[TimelineOutput, typer.Option(
        "--output", "-o", help="table, json, or ecs (JSON lines, as recordings export)."),
    ] = TimelineOutput.table,
    no_input: NoInputOpt = False,
) -> None:
    """Policy changes, enrolments, tag changes, removals and sessions, in time order."""
    from tsops.cli.audit import run_timeline

    global _json_output
    _json_output = output is TimelineOutput.json
    _finish(run_timeline(inventory, since, until, server, user, recordings, output.value,
                         no_input))
