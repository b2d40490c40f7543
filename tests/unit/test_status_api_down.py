"""`status` with the Tailscale API down (a socket that accepts and never answers): every host
it can probe is still reported, what only the API knows is unknown, the API's failure is one
line and makes the status an error (exit 1), and the API is asked once, not once per check."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.unit.test_flow_bootstrap import INVENTORY, Db1, run
from tests.unit.test_flow_servers import write_inventory
from tests.unit.test_json_output import valid
from tests.unit.test_recorder_presence import RECORDING
from tsops.checks import API_DOWN, Check
from tsops.cli.status import print_status
from tsops.errors import ExitCode
from tsops.flows.status import gather_status
from tsops.tailscale_api import TIMEOUT_HINT, TailscaleApi


@contextmanager
def hung_api() -> Iterator[TailscaleApi]:
    """An API client whose server accepts connections and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        held: list[socket.socket] = []
        stop = threading.Event()

        def accept() -> None:
            server.settimeout(0.2)
            while not stop.is_set():
                try:
                    held.append(server.accept()[0])
                except TimeoutError:
                    continue

        accepting = threading.Thread(target=accept, daemon=True)
        accepting.start()
        api = TailscaleApi(f"http://127.0.0.1:{server.getsockname()[1]}", "example.com",
                           token="tskey-api-test", timeout=0.5,
                           sleep=lambda wait: pytest.fail("a hung API is not retried"))
        try:
            yield api
        finally:
            api.close()
            stop.set()
            accepting.join()
            for connection in held:
                connection.close()


def test_status_with_the_api_hung_reports_every_host_and_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_inventory(tmp_path, RECORDING)
    db1 = Db1()
    db1.ssh = True
    with hung_api() as api, run(path, {"db1": db1.host}, api) as context:  # type: ignore[arg-type]
        status = gather_status(context)
        base = api.base
    assert api.requests == 1  # the device list, once: nothing else waited on the hung API
    (host,) = status.hosts
    assert (host.name, host.reason) == ("db1", None)
    assert {c.name: c.state for c in host.checks} == {
        "reachable": "ok", "version": "ok", "enrolled": "ok", "tags": "unknown", "ssh": "ok",
        "openssh": "ok"}
    assert host.check("tags") == Check(
        "tags", "unknown", "tag:db tag:server",
        f"{API_DOWN} (the node reports tag:db tag:server)")
    # The policy is a file in the repository: still read and checked without the API.
    assert status.policy is not None and status.policy.check.state != "unknown"
    assert status.coverage is not None
    assert status.coverage.checks[0] == Check(
        "recorders-online", "unknown", "an online device with tag:recorder", API_DOWN)
    message = (f"Tailscale API: list devices: GET {base}/tailnet/example.com/devices: no "
               f"progress on the answer within 0.5 s ({TIMEOUT_HINT})")
    assert status.unavailable == (("tailscale-api", message),)
    assert status.state == "error" and status.exit_code == ExitCode.FAILED

    data = valid("status", json.loads(json.dumps(status.as_dict())))
    assert data["unavailable"] == [{"service": "tailscale-api", "message": message}]
    assert data["hosts"][0]["checks"][3]["state"] == "unknown"

    print_status(status, symbols=False)
    out, err = capsys.readouterr()
    assert out.splitlines()[1].split() == ["db1", "server", "ok", "ok", "ok", "-", "ok"]
    assert f"{message} (what needs it is marked unknown: -)" in err
    assert "Traceback" not in out + err
    assert out.rstrip().endswith("; unavailable: tailscale-api.")


def test_a_policy_kept_in_the_api_is_unknown_when_the_api_is_down(tmp_path: Path) -> None:
    path = write_inventory(tmp_path, INVENTORY.replace(
        "  source: file\n  file: policy.hujson\n", "  source: api\n"))
    db1 = Db1()
    with hung_api() as api, run(path, {"db1": db1.host}, api) as context:  # type: ignore[arg-type]
        status = gather_status(context)
    assert api.requests == 1
    assert status.policy is not None
    assert status.policy.check == Check("policy", "unknown", "the policy file readable", API_DOWN)
    assert [h.name for h in status.hosts] == ["db1"]
    assert status.exit_code == ExitCode.FAILED


def test_a_recorder_online_in_the_tailnet_is_unknown_without_the_api() -> None:
    from tests.unit.test_recorder_host import CONVERGED as RECORDER_PROBE
    from tests.unit.test_status import recorder
    from tsops.recorders.host import parse_probe

    facts = parse_probe(RECORDER_PROBE)
    down = recorder(facts, None, registered=False, api_down=True)
    assert down.check("tailnet") == Check("tailnet", "unknown", "online with tag:recorder",
                                          API_DOWN)
    assert {c.name: c.state for c in down.checks} == {
        "reachable": "ok", "unit": "ok", "tailnet": "unknown", "files": "ok",
        "destination": "ok"}
