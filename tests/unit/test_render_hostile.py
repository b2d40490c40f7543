"""No value can add a line to the recorder's unit or environment files, whatever the inventory says.

Every field that reaches the rendered files gets hostile values (newlines, CR, `;`, `$`, `%`,
quotes, backslashes, spaces, `ExecStartPre=+/bin/sh`, ...). Each render either refuses with a
RenderError naming the field, or produces a file with exactly the lines of a benign render,
which `systemd-analyze verify` accepts without a word (it only warns on bad values, so any
output fails). Values are built without the inventory's validation: the renderer stands alone.
"""

from __future__ import annotations

import configparser
import os
import re
import string
import subprocess
import unicodedata
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.unit.test_recorder_render import (  # noqa: F401 (system_root is a fixture)
    BINARY,
    KEYS,
    LOCAL,
    system_root,
)
from tsops.recorders.render import (
    SECRETS_DIR,
    RecorderSpec,
    RenderError,
    _secrets_script,
    render_authkey_env,
    render_env,
    render_unit,
)

INJECTION = "\nExecStartPre=+/bin/sh -c 'touch /pwned'\n"
PRINTABLE_HOSTILE = [
    ";", "$", "$$", "${TS_AUTHKEY}", "$TS_AUTHKEY", "%", "%n", "%%", "%i", '"', "'", "\\",
    "\\n", "\\", " ", "  ", "`id`", "#", "=", "&&", "|", "[Service]", "ExecStartPre=+/bin/sh",
    " ExecStartPre=+/bin/sh -c id", "-", "@", "+", ":", ",", "*", "?", "~", "é", "\u00a0",
]
CONTROL = ["\n", "\r", "\r\n", "\t", "\x00", "\x0b", "\x0c", "\x1b", "\x7f", "\x85", "\u2028",
           "\u2029"]
# The whole message of a refused secret: the value is never shown, only the character's code.
REFUSED_SECRET = (r"{field}: holds the control character U\+[0-9A-F]{{4}}, which an environment "
                  r"file cannot carry safely")
WORD = st.text(string.ascii_letters + string.digits + "._-", min_size=1, max_size=4)
printable_hostile = st.lists(st.one_of(st.sampled_from(PRINTABLE_HOSTILE), WORD),
                             min_size=1, max_size=6).map("".join)
any_hostile = st.lists(st.one_of(st.sampled_from(PRINTABLE_HOSTILE + CONTROL), WORD),
                       min_size=1, max_size=6).map("".join)

S3_SPEC = BINARY
CONTAINER_KEYS = replace(BINARY, runtime="container", storage=KEYS)
LOCAL_SPEC = replace(BINARY, storage=LOCAL)
Setter = Callable[[RecorderSpec, str], RecorderSpec]


def _storage(spec: RecorderSpec, **update: object) -> RecorderSpec:
    # model_copy does not validate: the renderer must not count on the inventory's checks.
    return replace(spec, storage=spec.storage.model_copy(update=update))


# (field named in the error, base spec, how the value is put in). Path fields keep an absolute
# prefix without a slash after it, so the value is one path component under a known folder.
FIELDS: dict[str, tuple[str, RecorderSpec, Setter]] = {
    "hostname": ("recorders.hosts", S3_SPEC, lambda s, v: replace(s, hostname=v)),
    "binary_path": ("recorders.binary_path", S3_SPEC,
                    lambda s, v: replace(s, binary_path="/opt/tsrecorder" + v)),
    "service_user": ("recorders.service_user", S3_SPEC,
                     lambda s, v: replace(s, service_user="u" + v)),
    "statedir": ("recorders.statedir", S3_SPEC,
                 lambda s, v: replace(s, statedir="/var/lib/tsrecorder" + v)),
    "login_server": ("tailnet.login_server", S3_SPEC,
                     lambda s, v: replace(s, login_server="https://ctl.example.com" + v)),
    "local_destination": ("storage.destination", LOCAL_SPEC,
                          lambda s, v: _storage(s, destination="/srv/recordings" + v)),
    "bucket": ("storage.destination", S3_SPEC,
               lambda s, v: _storage(s, destination="s3://bucket" + v)),
    "endpoint": ("storage.endpoint", S3_SPEC,
                 lambda s, v: _storage(s, endpoint="https://s3.example.com" + v)),
    "region": ("storage.region", S3_SPEC, lambda s, v: _storage(s, region="us-east-1" + v)),
    "image": ("recorders.image", S3_SPEC,
              lambda s, v: replace(s, image="tailscale/tsrecorder:v1" + v)),
}
RUNTIMES: dict[str, Callable[[RecorderSpec], RecorderSpec]] = {
    "binary": lambda spec: spec,
    "container": lambda spec: replace(spec, runtime="container",
                                      storage=KEYS if spec.storage.is_s3 else spec.storage),
}
# Fields that reach each runtime's unit (the container has no service user or binary path, the
# binary no image).
CASES = [(runtime, name) for runtime in RUNTIMES for name in FIELDS
         if not (runtime == "binary" and name == "image")
         and not (runtime == "container" and name in ("binary_path", "service_user"))]


def directives(unit: str) -> list[str]:
    """The unit's shape: comment and section lines whole, then each directive's name."""
    return [line if line.startswith(("#", "[")) or not line else line.split("=", 1)[0]
            for line in unit.split("\n")]


def assert_same_lines(unit: str, benign: str) -> None:
    """The hostile unit has exactly the benign unit's lines, and no line continues another."""
    assert directives(unit) == directives(benign)
    assert not any(line.endswith("\\") for line in unit.split("\n"))
    assert "\r" not in unit


@pytest.fixture(scope="module")
def verify_root(system_root: Path) -> Path:  # noqa: F811 (the imported fixture)
    """The rendering tests' root for systemd-analyze verify (targets, the units' programs)."""
    return system_root


def executable(root: Path, path: str) -> None:
    """Create an executable at `path` under `root`: verify checks that ExecStart's exists."""
    where = root / path.lstrip("/")
    assert where.resolve().is_relative_to(root.resolve())
    where.parent.mkdir(parents=True, exist_ok=True)
    where.write_text("#!/bin/sh\n")
    where.chmod(0o755)


def verify(root: Path, unit: str) -> None:
    """systemd-analyze verify accepts the unit with no output at all."""
    (root / "etc/systemd/system/tsrecorder.service").write_text(unit)
    result = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", "tsrecorder.service"],
        capture_output=True, text=True, check=False, timeout=60,
    )
    assert (result.returncode, result.stderr, result.stdout) == (0, "", ""), unit


@pytest.mark.parametrize(("runtime", "name"), CASES)
@pytest.mark.parametrize("control", CONTROL, ids=repr)
def test_a_control_character_in_any_field_is_refused_naming_it(
    runtime: str, name: str, control: str
) -> None:
    field, base, put = FIELDS[name]
    spec = put(RUNTIMES[runtime](base), "x" + control + INJECTION.strip())
    with pytest.raises(RenderError) as refused:
        render_unit(spec)
    assert refused.value.field == field
    assert refused.value.message.startswith(f"{field}: ")
    assert "\n" not in refused.value.message


@pytest.mark.parametrize(("runtime", "name"), CASES)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(value=any_hostile)
def test_a_hostile_value_in_any_field_is_refused_or_adds_no_line(
    runtime: str, name: str, value: str, verify_root: Path
) -> None:
    field, base, put = FIELDS[name]
    spec = put(RUNTIMES[runtime](base), value)
    benign = render_unit(put(RUNTIMES[runtime](base), "x"))
    try:
        unit = render_unit(spec)
    except RenderError as refused:
        assert refused.field == field
        return
    assert not any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in value)
    assert_same_lines(unit, benign)
    if spec.runtime == "binary":
        executable(verify_root, spec.binary_path)
    verify(verify_root, unit)


@pytest.mark.parametrize("runtime", sorted(RUNTIMES))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(values=st.fixed_dictionaries({name: printable_hostile for name in FIELDS}))
def test_hostile_values_in_every_field_at_once(
    runtime: str, values: dict[str, str], verify_root: Path
) -> None:
    for storage in ("local_destination", "bucket"):
        spec = benign = RUNTIMES[runtime](S3_SPEC if storage == "bucket" else LOCAL_SPEC)
        for name, (_, _, put) in FIELDS.items():
            if name in ("local_destination", "bucket") and name != storage:
                continue
            spec, benign = put(spec, values[name]), put(benign, "x")
        try:
            unit = render_unit(spec)
        except RenderError:
            continue
        assert_same_lines(unit, render_unit(benign))
        if spec.runtime == "binary":
            executable(verify_root, spec.binary_path)
        verify(verify_root, unit)


def test_an_injected_directive_is_refused_in_every_field() -> None:
    """The issue's case: a newline in login_server or a local destination adds ExecStartPre=+."""
    for runtime, name in CASES:
        field, base, put = FIELDS[name]
        refusal = rf"^{re.escape(field)}: holds the control character U\+000A"
        with pytest.raises(RenderError, match=refusal):
            render_unit(put(RUNTIMES[runtime](base), INJECTION))


def test_ordinary_and_quoted_values_are_written_as_systemd_reads_them() -> None:
    spec = replace(LOCAL_SPEC, hostname="rec 1;x", statedir="/var/lib/ts $HOME 50%",
                   login_server='https://ctl.example.com/a"b\\c%d$e')
    unit = render_unit(spec)
    assert ('ExecStart=/usr/local/bin/tsrecorder --dst=/srv/recordings '
            '"--statedir=/var/lib/ts $$HOME 50%%" "--hostname=rec 1;x"\n') in unit
    assert 'Environment="TSRECORDER_LOGIN_SERVER=https://ctl.example.com/a\\"b\\\\c%%d$e"\n' in (
        unit)
    assert 'ReadWritePaths="/var/lib/ts $HOME 50%%" /srv/recordings\n' in unit
    with pytest.raises(RenderError, match=r"^recorders\.statedir: .*quotes or backslashes"):
        render_unit(replace(spec, statedir='/var/lib/"x'))
    with pytest.raises(RenderError, match=r"^recorders\.binary_path: must be an absolute path"):
        render_unit(replace(spec, binary_path="-/bin/true"))
    with pytest.raises(RenderError, match=r"^storage\.destination: .*':' or ','"):
        render_unit(replace(spec, runtime="container", storage=LOCAL.model_copy(
            update={"destination": "/srv/a:/etc"})))


def read_back_with_a_shell(text: str, names: list[str]) -> list[str]:
    """Source an environment file with /bin/sh (same double-quote rules as systemd)."""
    script = 'set -a; . "$1"; ' + "; ".join(f'printf "%s\\0" "${name}"' for name in names)
    result = subprocess.run(["/bin/sh", "-c", script, "sh", "/dev/stdin"], input=text,
                            capture_output=True, text=True, check=True, timeout=30,
                            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    return result.stdout.split("\0")[:-1]


@settings(max_examples=150, deadline=None)
@given(key_id=any_hostile, secret=any_hostile)
def test_environment_file_values_stay_on_their_line_and_read_back_unchanged(
    key_id: str, secret: str
) -> None:
    controls = [v for v in (key_id, secret)
                if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in v)]
    padded = [v for v in (key_id, secret) if v != v.strip()]
    try:
        text = render_env(key_id, secret)
    except RenderError as refused:
        assert (controls or padded) and refused.field.startswith("storage.credentials.")
        assert re.fullmatch(REFUSED_SECRET.format(field="storage\\.credentials\\.[a-z_]+"),
                            refused.message) or refused.problem == (
            "starts or ends with white space, which the AWS credentials file cannot carry")
        return
    assert not controls and not padded
    lines = text.split("\n")
    assert [line.split("=", 1)[0] for line in lines] == [
        lines[0], "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", ""]
    assert not any(line.endswith("\\") and not line.endswith('"') for line in lines)
    assert read_back_with_a_shell(text, ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]) == [
        key_id, secret]


@settings(max_examples=100, deadline=None)
@given(key=any_hostile)
def test_the_authkey_file_holds_one_line_or_is_refused(key: str) -> None:
    try:
        text = render_authkey_env(key)
    except RenderError as refused:
        assert any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in key)
        assert re.fullmatch(REFUSED_SECRET.format(field="the recorder auth key"),
                            refused.message)
        return
    assert text.count("\n") == 1 and text.startswith("TS_AUTHKEY=\"")
    assert read_back_with_a_shell(text, ["TS_AUTHKEY"]) == [key]


@settings(max_examples=60, deadline=None)
@given(key=printable_hostile, key_id=printable_hostile, secret=printable_hostile)
def test_the_container_secrets_script_writes_hostile_secrets_unchanged(
    key: str, key_id: str, secret: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The ExecStartPre shell, run by /bin/sh on values systemd read from the env files."""
    assume(key_id == key_id.strip() and secret == secret.strip())  # refused by render_env
    folder = tmp_path_factory.mktemp("secrets") / "tsrecorder"
    script = _secrets_script(CONTAINER_KEYS).replace(SECRETS_DIR, str(folder))
    assert "chown -R 65532:65532" in script
    script = script.replace("chown -R 65532:65532", "true")  # needs root; the lab runs it
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TS_AUTHKEY": key,
                   "AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret}
    subprocess.run(["/bin/sh", "-c", script], env=environment, check=True, timeout=30)
    assert (folder / "authkey").read_text() == key + "\n"
    credentials = configparser.RawConfigParser()
    credentials.read_string((folder / "aws-credentials").read_text())
    assert dict(credentials["default"]) == {
        "aws_access_key_id": key_id, "aws_secret_access_key": secret}
    assert [oct(p.stat().st_mode & 0o777) for p in (folder, folder / "authkey")] == [
        "0o500", "0o400"]
