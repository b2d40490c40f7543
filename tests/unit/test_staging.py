"""Staging for a non-root SSH user: files and secrets reach a privileged step through a private
directory the SSH user owns, never through sudo's standard input, and the directory is gone
after success and after failure.

The scripts run in a real shell on this machine (a "host" whose privileged runs are plain `sh`,
as for root): what they create, with which modes, and what they leave behind is observed, not
assumed from their text.
"""

from __future__ import annotations

import ast
import os
import shlex
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.unit.test_recorder_render import BINARY
from tsops import remote
from tsops.errors import TsopsError
from tsops.inventory.load import Target
from tsops.inventory.model import Install
from tsops.recorders.host import install_script
from tsops.remote import (
    CommandFailed,
    RunResult,
    Stage,
    SudoNeedsPassword,
    check_sudo,
    shell_command,
)
from tsops.servers import scripts
from tsops.servers.plan import Desired

SECRET = "staged-enrollment-secret-0123456789abcdef"
DESIRED = Desired(tags=("tag:server",), hostname="db1", login_server=None,
                  install=Install(method="preinstalled"), tailnet="-")


class ShellHost:
    """Runs every script in a real `sh` on this machine, recording how each was run."""

    def __init__(self, env: dict[str, str] | None = None, fail_put: bool = False) -> None:
        self.name = "db1"
        self.round_trips = 0
        self.runs: list[tuple[str, str | None, bool]] = []
        self.env = {**os.environ, **(env or {})}
        self.fail_put = fail_put

    def run(self, script: str, *, stdin: str | None = None,
            privileged: bool = True) -> RunResult:
        self.round_trips += 1
        self.runs.append((script, stdin, privileged))
        done = subprocess.run(["sh", "-c", script], input=stdin or "", capture_output=True,
                              text=True, check=False, timeout=60, env=self.env)
        return RunResult(done.returncode, done.stdout, done.stderr)

    def put(self, local: Path, path: str) -> None:
        self.round_trips += 1
        if self.fail_put:
            raise TsopsError(f"{self.name}: copying {local.name}: the connection dropped")
        shutil.copyfile(local, path)
        Path(path).chmod(0o600)

    def close(self) -> None:
        """Nothing to close."""


STAGES: list[Path] = []


def leftovers() -> list[Path]:
    """The staging directories left in this test's /tmp stand-in."""
    return sorted(STAGES[-1].iterdir())


@pytest.fixture(autouse=True)
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stages go to a folder of this test (tests running in parallel see only their own)."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    STAGES.append(folder)
    monkeypatch.setattr(remote, "STAGE_PREFIX", f"{folder}/tsops-stage.")


def fake_tailscale(tmp_path: Path, exit_code: int) -> dict[str, str]:
    """A `tailscale` on PATH that records the auth key file's mode, owner and content."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "tailscale.log"
    tool = bin_dir / "tailscale"
    tool.write_text(
        "#!/bin/sh\n"
        "for a in \"$@\"; do case \"$a\" in --auth-key=file:*) f=${a#--auth-key=file:};; esac; "
        "done\n"
        f"{{ stat -c '%a %U' \"$f\"; stat -c '%a' \"$(dirname \"$f\")\"; cat \"$f\"; "
        f"echo \"$@\"; }} > {log}\n"
        f"exit {exit_code}\n")
    tool.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


@pytest.mark.parametrize("exit_code", [0, 1])
def test_the_auth_key_is_staged_0600_read_from_the_file_and_gone_after_success_or_failure(
        tmp_path: Path, exit_code: int) -> None:
    host = ShellHost(fake_tailscale(tmp_path, exit_code))
    with Stage(host, texts={scripts.STAGED_AUTHKEY: SECRET + "\n"}) as stage:
        result = stage.run(scripts.enroll(DESIRED))
    assert result.exited == exit_code
    mode, dir_mode, key, argv = (tmp_path / "tailscale.log").read_text().splitlines()
    user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout
    assert mode == f"600 {user.strip()}" and dir_mode == "700" and key == SECRET
    assert SECRET not in argv
    assert leftovers() == []  # removed in the same round trip, success or failure
    assert host.round_trips == 2 + (exit_code != 0)  # stage, step (+ a cleanup after failure)
    # The secret travelled only on the stdin of the unprivileged staging command, never in a
    # script and never on a privileged command's stdin (what sudo's log_input records).
    for script, stdin, privileged in host.runs:
        assert SECRET not in script
        assert not (privileged and stdin)
    assert [p for _, stdin, p in host.runs if stdin] == [False]


def test_an_upload_into_the_stage_is_0600_and_the_stage_goes_with_the_step(
        tmp_path: Path) -> None:
    tarball = tmp_path / "tailscale.tgz"
    tarball.write_bytes(b"\x1f\x8b not really a tarball")
    host = ShellHost()
    seen = tmp_path / "seen"
    with Stage(host, files={scripts.STAGED_TARBALL: tarball}) as stage:
        assert stage.path is not None and stage.path.startswith(remote.STAGE_PREFIX)
        assert stat.S_IMODE(Path(stage.path).stat().st_mode) == 0o700
        staged = Path(stage.path) / scripts.STAGED_TARBALL
        assert stat.S_IMODE(staged.stat().st_mode) == 0o600
        result = stage.run(f'cmp "$stage/tailscale.tgz" {tarball} && echo same > {seen}\n'
                           "exit 3\n")
    assert result.exited == 3 and seen.read_text() == "same\n"
    assert leftovers() == []


def test_a_failed_upload_leaves_no_stage_behind(tmp_path: Path) -> None:
    tarball = tmp_path / "tailscale.tgz"
    tarball.write_bytes(b"x")
    host = ShellHost(fail_put=True)
    with pytest.raises(TsopsError, match="the connection dropped"), Stage(
            host, texts={"authkey": SECRET}, files={"tailscale.tgz": tarball}) as stage:
        stage.run("echo never\n")
    assert leftovers() == []
    assert [privileged for _, _, privileged in host.runs] == [False, False]  # make, discard


def test_a_step_whose_privileged_command_never_ran_still_leaves_nothing(
        tmp_path: Path) -> None:
    """sudo refusing (or the connection dropping) means the script's own removal never ran:
    the SSH user removes the directory on leaving."""
    class Refusing(ShellHost):
        def run(self, script: str, *, stdin: str | None = None,
                privileged: bool = True) -> RunResult:
            if privileged:
                self.runs.append((script, stdin, privileged))
                return RunResult(1, "", "sudo: a password is required\n")
            return super().run(script, stdin=stdin, privileged=privileged)

    host = Refusing()
    with Stage(host, texts={"authkey": SECRET}) as stage:
        assert not stage.run("echo hi\n").ok
    assert leftovers() == []


def test_a_stage_that_cannot_be_made_is_one_clear_failure() -> None:
    class NoMktemp(ShellHost):
        def run(self, script: str, *, stdin: str | None = None,
                privileged: bool = True) -> RunResult:
            return RunResult(1, "", "mktemp: failed to create directory via template: "
                             "No space left on device\n")

    with pytest.raises(CommandFailed, match="making a private staging directory failed "
                       r"\(exit 1\): mktemp: .*No space left on device"), Stage(
            NoMktemp(), texts={"authkey": SECRET}):
        pass


def target(user: str, sudo: bool) -> Target:
    return Target(name="db1", role="server", group=None, address="192.0.2.1", tags=(),
                  user=user, port=22, identity_file=None, sudo=sudo, jump_host=None, line=1)


def test_sudo_asking_for_a_password_is_refused_with_one_line_naming_host_and_remedy() -> None:
    ops = target("ops", True)
    command = shell_command(ops, "true", True)
    assert command.startswith("sudo -n ")
    asked = RunResult(1, "", "sudo: a password is required\n")
    with pytest.raises(SudoNeedsPassword) as refused:
        check_sudo(ops, command, asked)
    assert refused.value.message == (
        "db1: sudo asks ops for a password; tsops runs privileged steps with `sudo -n` and "
        "never types one: give ops passwordless sudo (NOPASSWD) or connect as root (see "
        'docs/servers.md, "SSH users and sudo")')
    assert refused.value.reason.startswith("sudo asks ops for a password")
    # A script that itself failed, or a command not run through sudo, is left alone.
    failed = RunResult(1, "", "tailscale: a password is required\n")
    assert check_sudo(ops, command, failed) is failed
    assert check_sudo(ops, shell_command(ops, "true", False), asked) is asked


def test_no_privileged_command_in_tsops_gets_standard_input() -> None:
    """Anything on a privileged command's stdin passes through sudo, whose I/O logging
    (log_input) records it: every `run(..., stdin=...)` in tsops must say privileged=False."""
    package = Path(__file__).resolve().parents[2] / "tsops"
    offenders = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "run"):
                continue
            keywords = {k.arg: k.value for k in node.keywords}
            if "stdin" not in keywords or (isinstance(keywords["stdin"], ast.Constant)
                                           and keywords["stdin"].value is None):
                continue
            privileged = keywords.get("privileged")
            if not (isinstance(privileged, ast.Constant) and privileged.value is False):
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []


def test_the_recorder_install_script_takes_each_file_from_the_stage_and_removes_it() -> None:
    """The recorder's environment file (its S3 keys) and auth key are copied from the staged
    0600 files into root-only files and each staged copy is removed at once; nothing is read
    from standard input."""
    script = install_script(BINARY, {"binary", "user", "statedir", "env", "unit", "authkey"})
    lines = [shlex.split(line) for line in script.splitlines()]
    for staged, path, mode in [("env", "/etc/tsrecorder/env", "0600"),
                               ("authkey.env", "/etc/tsrecorder/authkey.env", "0600"),
                               ("unit", "/etc/systemd/system/tsrecorder.service", "0644")]:
        new = f"{path}.tsops-new"
        at = lines.index(["cp", f"$stage/{staged}", new])
        assert lines[at + 1:at + 5] == [["chown", "root:root", new], ["chmod", mode, new],
                                        ["mv", new, path], ["rm", "-f", f"$stage/{staged}"]]
    assert ["install", "-m", "0755", "-o", "root", "-g", "root", "$stage/tsrecorder",
            BINARY.binary_path] in lines
    assert ["systemctl", "daemon-reload"] in lines
    assert "cat" not in script and "umask 077" in script
    subprocess.run(["sh", "-n"], input=script, text=True, check=True)
