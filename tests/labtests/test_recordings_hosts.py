"""Recordings in a directory on two lab recorders, read over SSH through `--inventory`.

One lab: two recorder hosts deployed by `tsops bootstrap` with a local destination, real
sessions recorded through the recorder simulator (the second after the first recorder stops,
so each recorder holds one), hostile files beside them; then list, show, cat, search, export,
seal and verify read the recorders, each recording naming its recorder, and the operator's
machine's same path is never read (it does not exist here). `recordings serve --inventory`
shows the same recordings in headless Chromium, with their recorders, the hostile files
flagged, and plays one to its end. Last, a recorder whose SSH is down is one line and the other
is still listed (exit 1).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import (
    browser,  # noqa: F401 (fixture)
    player_state,
    screen_lines,
    serve,
    wait_for,
)
from tests.lab.lab import Lab, LabHost
from tests.lab.tailnet import TOKEN_VARIABLE, LabTailnet
from tests.labtests.test_recorder import (
    SSH_POLICY,
    bootstrap,
    executable,  # noqa: F401 (fixture)
    tsops,
    write_inventory,
)
from tests.sim.recorder.bundle import allow_port_80
from tests.sim.recorder.cast import shell_output
from tests.sim.recorder.conftest import ALICE, register_server
from tests.sim.recorder.session import Outcome, SessionResult, run_session

DESTINATION = "/srv/tsops-lab-recordings"


def record(tailnet: LabTailnet, command: str, output: str) -> tuple[SessionResult, str]:
    """One recorded session to web1 through the control's SSH policy, and its key."""
    result = run_session(tailnet.control, "web1", ALICE, "alice",
                         shell_output("alice@web1:~$ ", [(command, output)]))
    assert result.outcome is Outcome.RECORDED, (result.failure, result.attempts)
    assert result.recorder is not None and result.key is not None
    return result, result.key


def serving(lab: Lab, session: SessionResult) -> LabHost:
    """The lab host whose recorder stored the session."""
    assert session.recorder is not None
    return next(h for h in lab.hosts if h.ip == session.recorder.endpoint)


def as_json(result: Any) -> Any:
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


@pytest.mark.lab(hosts=2)
def test_recordings_are_read_on_the_recorders(
    lab: Lab, tailnet: LabTailnet, executable: Path, tmp_path: Path,  # noqa: F811
    browser: Any,  # noqa: F811
) -> None:
    assert not Path(DESTINATION).exists()  # were it read here, every command would fail
    for host in lab.hosts:
        allow_port_80(host)
    inventory = write_inventory(tailnet, tmp_path / "inventory.yaml",
                                [h.name for h in lab.hosts],
                                {"destination": DESTINATION, "min_free_gb": 100000}, executable)
    bootstrap(tailnet, inventory)
    tailnet.control.state.seed_policy(SSH_POLICY)
    register_server(tailnet.control)
    first, first_key = record(tailnet, "uptime", "up 3 days, first recorder\n")
    first_host = serving(lab, first)
    first_host.nsenter("systemctl stop tsrecorder")  # the next session goes to the other
    second, second_key = record(tailnet, "hostname", "web1 on the second recorder\n")
    second_host = serving(lab, second)
    assert first_host != second_host
    ids = {first_key.removesuffix(".cast"): first_host.name,
           second_key.removesuffix(".cast"): second_host.name}

    # Hostile files beside the recordings: a name with a newline and an escape, a link named
    # like a recording pointing out of the directory, a linked node directory.
    node = first_key.split("/", 1)[0]
    folder = shlex.quote(f"{DESTINATION}/{node}")
    first_host.nsenter(
        f"printf x > {folder}/\"$(printf 'evil\\n\\033[2Jname')\".cast && "
        f"ln -s /etc/shadow {folder}/shadow.cast && "
        f"mkdir -p /root/outside/nX && printf leak > /root/outside/nX/leak.cast && "
        f"ln -s /root/outside {DESTINATION}/nLINKED")

    listed = as_json(tsops(tailnet, "recordings", "list", "-i", str(inventory), "-o", "json"))
    assert {r["id"]: r["recorder"] for r in listed["recordings"]} == ids
    problems = {(p["kind"], p["key"], p["recorder"]) for p in listed["problems"]}
    assert problems == {
        ("bad-name", f"{node}/evil\n\x1b[2Jname.cast", first_host.name),
        ("not-a-file", f"{node}/shadow.cast", first_host.name),
        ("symlink", "nLINKED", first_host.name)}
    table = tsops(tailnet, "recordings", "list", "-i", str(inventory))
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split()[:3] == ["ID", "NODE", "RECORDER"]
    assert any(row.startswith(second_key.removesuffix(".cast")) and second_host.name in row
               for row in rows)
    assert "\x1b" not in table.stdout + table.stderr  # the hostile name is shown inert

    shown = as_json(tsops(tailnet, "recordings", "show", second_key, "-i", str(inventory),
                          "-o", "json"))
    assert (shown["recorder"], shown["ssh_user"], shown["command"]) == (
        second_host.name, "alice", "")
    cat = tsops(tailnet, "recordings", "cat", "--plain", first_key, "-i", str(inventory))
    assert cat.returncode == 0 and "up 3 days, first recorder" in cat.stdout, cat.stderr
    found = as_json(tsops(tailnet, "recordings", "search", "second recorder", "-i",
                          str(inventory), "-o", "json"))
    assert [(m["id"], m["recorder"]) for m in found["matches"]] == [
        (second_key.removesuffix(".cast"), second_host.name)]
    exported = tsops(tailnet, "recordings", "export", "-i", str(inventory))
    assert exported.returncode == 0, exported.stderr
    assert {json.loads(line)["recorder"] for line in exported.stdout.splitlines()} == {
        first_host.name, second_host.name}

    key_file, manifest = tmp_path / "seal.key", tmp_path / "manifest.json"
    assert tsops(tailnet, "recordings", "new-key", "--key-file", str(key_file)).returncode == 0
    sealed = tsops(tailnet, "recordings", "seal", "-m", str(manifest), "--key-file",
                   str(key_file), "-i", str(inventory))
    assert sealed.returncode == 0, sealed.stderr
    assert f"sealed 2 recording(s) of {DESTINATION} on " in sealed.stdout
    checked = as_json(tsops(tailnet, "recordings", "verify", "-m", str(manifest), "--key-file",
                            str(key_file), "-i", str(inventory), "-o", "json"))
    assert (checked["intact"], checked["missing"], checked["altered"]) == (2, [], [])

    # The review UI over the same recorders: every recording with its recorder, the hostile
    # files flagged (inert), a recording played to its end from the recorder that holds it.
    for served in serve("-i", str(inventory), environment={TOKEN_VARIABLE: tailnet.token}):
        browser.get(served.url)
        wait_for(browser, lambda b: "token=" not in b.current_url)
        rows = browser.find_elements("css selector", "#recordings tbody tr.recording")
        assert {row.get_attribute("data-id"): row.find_element("css selector", ".recorder").text
                for row in rows} == ids
        damaged = {(item.get_attribute("data-recorder"),
                    item.find_element("css selector", ".flag").text)
                   for item in browser.find_elements("css selector", "li.damaged-file")}
        assert damaged == {(first_host.name, "bad-name"), (first_host.name, "not-a-file"),
                           (first_host.name, "symlink")}
        assert "\x1b" not in browser.page_source
        browser.get(f"{served.base}/r/{second_key.removesuffix('.cast')}?autoplay=1&speed=4")
        wait_for(browser, lambda b: player_state(b) == "ended")
        assert browser.find_element("id", "recorder").text == second_host.name
        assert "web1 on the second recorder" in screen_lines(browser)

    # A recorder that cannot be reached: one line, the other still listed, exit 1.
    second_host.nsenter("systemctl stop ssh")
    partial = tsops(tailnet, "recordings", "list", "-i", str(inventory), "-o", "json")
    assert partial.returncode == 1, partial.stdout + partial.stderr
    document = json.loads(partial.stdout)
    assert {r["id"] for r in document["recordings"]} == {first_key.removesuffix(".cast")}
    (down,) = [p for p in document["problems"] if not p["key"]]
    assert (down["kind"], down["recorder"]) == ("unreachable", second_host.name)
    assert f"unreachable: recorder {second_host.name}: connection refused" in partial.stderr
    assert "1 recorder(s) not read" in partial.stderr
    refused = tsops(tailnet, "recordings", "verify", "-m", str(manifest), "--key-file",
                    str(key_file), "-i", str(inventory))
    assert refused.returncode == 1 and "cannot verify: unreachable" in refused.stderr
