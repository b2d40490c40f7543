"""The CLI's pure parts: Go-style flag parsing, tag checks, the revert check, the SSH risk rule."""

from __future__ import annotations

import pytest

from tests.sim.tailscale.package.tailscale import (
    DEFAULT_CONTROL_URL,
    SET_FLAGS,
    UP_FLAGS,
    CLIError,
    accidental_revert_error,
    login_server_change_error,
    parse_duration,
    parse_flags,
    parse_tags,
    risk_accepted,
    ssh_over_tailscale,
    up_prefs,
)

CONTROL = "http://10.213.0.1:8080"
ENROLLED = {
    "AdvertiseTags": ["tag:server"],
    "ControlURL": CONTROL,
    "Hostname": "",
    "RunSSH": True,
    "WantRunning": True,
}


def test_flags_parse_like_go() -> None:
    flags = parse_flags(
        ["--ssh", "-advertise-tags", "tag:a,tag:b", "--timeout=1m30s", "--hostname=", "x"],
        UP_FLAGS,
    )
    assert flags.values == {
        "ssh": True, "advertise-tags": "tag:a,tag:b", "timeout": 90.0, "hostname": "",
    }
    assert flags.rest == ["x"]
    assert parse_flags(["--ssh=false"], UP_FLAGS).values == {"ssh": False}
    # A bool flag never takes the next argument as its value, as in Go.
    assert parse_flags(["--ssh", "false"], UP_FLAGS).rest == ["false"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--advertise-tags=tag:x"], "flag provided but not defined: -advertise-tags"),
        (["--ssh=maybe"], 'invalid boolean value "maybe" for -ssh: parse error'),
        (["--hostname"], "flag needs an argument: -hostname"),
        (["---ssh"], "bad flag syntax: ---ssh"),
    ],
)
def test_flag_errors(args: list[str], message: str) -> None:
    with pytest.raises(CLIError, match=f"^{message}$"):
        parse_flags(args, SET_FLAGS)


def test_durations() -> None:
    assert parse_duration("0") == 0
    assert parse_duration("500ms") == 0.5
    assert parse_duration("1h2m3s") == 3723
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration("30")


@pytest.mark.parametrize(
    ("tag", "message"),
    [
        ("server", "tags must start with 'tag:'"),
        ("tag:", "must not be empty"),
        ("tag:1st", "must start with a letter"),
        ("tag:a_b", "only contain numbers, letters, or dashes"),
    ],
)
def test_malformed_tags_are_refused(tag: str, message: str) -> None:
    with pytest.raises(CLIError, match=message):
        parse_tags(tag)


def test_first_up_is_never_a_revert() -> None:
    wanted = up_prefs(parse_flags(["--ssh"], UP_FLAGS))
    fresh = {**ENROLLED, "ControlURL": "", "AdvertiseTags": [], "RunSSH": False}
    assert accidental_revert_error({"ssh"}, wanted, fresh) is None


def test_unmentioned_non_default_flag_is_a_revert() -> None:
    flags = parse_flags([f"--login-server={CONTROL}", "--hostname=web1"], UP_FLAGS)
    error = accidental_revert_error(set(flags.values), up_prefs(flags), ENROLLED)
    assert error is not None
    assert error.endswith(
        f"\ttailscale up --advertise-tags=tag:server --hostname=web1 "
        f"--login-server={CONTROL} --ssh"
    )


def test_restating_every_non_default_flag_is_not_a_revert() -> None:
    flags = parse_flags(
        [f"--login-server={CONTROL}", "--advertise-tags=tag:server", "--ssh=false"], UP_FLAGS
    )
    assert accidental_revert_error(set(flags.values), up_prefs(flags), ENROLLED) is None


def test_default_login_server_counts_as_default() -> None:
    flags = parse_flags(["--ssh", "--advertise-tags=tag:server"], UP_FLAGS)
    current = {**ENROLLED, "ControlURL": DEFAULT_CONTROL_URL}
    assert accidental_revert_error(set(flags.values), up_prefs(flags), current) is None


OTHER_CONTROL = "http://10.213.0.1:9090"
MOVE = {**ENROLLED, "ControlURL": OTHER_CONTROL}


@pytest.mark.parametrize(
    ("wanted", "current", "state", "force_reauth", "refused"),
    [
        (MOVE, ENROLLED, "Running", False, True),
        (MOVE, ENROLLED, "Running", True, False),
        (MOVE, ENROLLED, "Stopped", False, False),
        (MOVE, ENROLLED, "NeedsLogin", False, False),
        (ENROLLED, ENROLLED, "Running", False, False),
        # A trailing slash is another string: the real CLI compares prefs exactly.
        ({**ENROLLED, "ControlURL": CONTROL + "/"}, ENROLLED, "Running", False, True),
        # Every spelling of the default login server is the same one.
        ({**ENROLLED, "ControlURL": DEFAULT_CONTROL_URL},
         {**ENROLLED, "ControlURL": "https://login.tailscale.com"}, "Running", False, False),
    ],
)
def test_login_server_change_needs_force_reauth_while_running(
    wanted: dict[str, object], current: dict[str, object], state: str, force_reauth: bool,
    refused: bool,
) -> None:
    error = login_server_change_error(wanted, current, {"BackendState": state}, force_reauth)
    assert error == ("can't change --login-server without --force-reauth" if refused else None)


def test_risk_acceptance() -> None:
    assert risk_accepted("lose-ssh", "lose-ssh")
    assert risk_accepted("other,all", "lose-ssh")
    assert not risk_accepted("", "lose-ssh")


RUNNING = {"BackendState": "Running", "Self": {"Addrs": ["10.213.0.11:41641"]}}


@pytest.mark.parametrize(
    ("environ", "status", "expected"),
    [
        ({"SSH_CLIENT": "100.100.1.2 5000 22"}, {}, True),
        ({"SSH_CLIENT": "fd7a:115c:a1e0::9 5000 22"}, {}, True),
        ({"SSH_CLIENT": "10.213.0.1 5000 22"}, {}, False),
        ({"SSH_CONNECTION": "10.213.0.1 5000 10.213.0.11 22"}, RUNNING, True),
        ({"SSH_CONNECTION": "10.213.0.1 5000 10.213.0.12 22"}, RUNNING, False),
        (
            {"SSH_CONNECTION": "10.213.0.1 5000 10.213.0.11 22"},
            {**RUNNING, "BackendState": "Stopped"},
            False,
        ),
        ({}, RUNNING, False),
    ],
)
def test_ssh_over_tailscale(
    environ: dict[str, str], status: dict[str, object], expected: bool
) -> None:
    assert ssh_over_tailscale(environ, status) is expected
