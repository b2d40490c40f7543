"""Hostile inventories and policy files: refused at once with exit 2, one line naming where.

Each file in tests/data/hostile_inventories/ and tests/data/hostile_policies/ starts with
`# expect: LINE:COL TEXT` (`// expect:` for a policy): the one error line must start with
`FILE:LINE:COL: TEXT`. They cover alias bombs, deep nesting, YAML tags and merge keys, control
characters in every kind of string that reaches a host, addresses with shell metacharacters,
bad check periods, plain-http API URLs, non-UTF-8 bytes. Each runs through the real CLI under a
per-test timeout, so that a file that makes tsops spin fails instead of hanging the suite (no
test measures time).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from tsops.errors import ExitCode, InventoryError
from tsops.inventory.load import MAX_BYTES, load_inventory

DATA = Path(__file__).resolve().parents[1] / "data"
INVENTORIES = sorted((DATA / "hostile_inventories").glob("*.yaml"))
POLICIES = sorted((DATA / "hostile_policies").glob("*.hujson"))
TIMEOUT = 30  # seconds; each case takes well under one, a hang must fail rather than stall
VALID = """\
version: 1
tailnet:
  name: example.com
  credentials:
    api_token: {env: TSOPS_TEST_UNSET_TOKEN}
servers:
  hosts:
    web1: {address: 192.0.2.11}
"""


def expectation(path: Path) -> tuple[str, str]:
    """The `LINE:COL` and the message start a data file's first line promises."""
    first = path.read_bytes().split(b"\n", 1)[0].decode("ascii")
    match = re.fullmatch(r"(?:#|//) expect: (\d+:\d+) (.+)", first)
    assert match, f"{path.name} lacks its 'expect:' line"
    return match.group(1), match.group(2)


def tsops(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI with no API token in the environment."""
    env = {k: v for k, v in os.environ.items() if k != "TSOPS_TEST_UNSET_TOKEN"}
    return subprocess.run([sys.executable, "-m", "tsops", *args], capture_output=True,
                          text=True, check=False, env=env, timeout=TIMEOUT)


def assert_one_error(result: subprocess.CompletedProcess[str], where: str, text: str) -> None:
    """Exit 2, nothing on stdout, and exactly one error line (besides warnings) at `where`."""
    assert result.returncode == ExitCode.BAD_INPUT, result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert "internal error" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if not line.startswith("warning: ")]
    assert errors == [errors[0]], result.stderr
    assert errors[0].startswith(f"{where}: {text}"), errors[0]


def test_there_are_at_least_25_hostile_inputs() -> None:
    assert len(INVENTORIES) + len(POLICIES) >= 25
    assert len(POLICIES) >= 5


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("path", INVENTORIES, ids=[p.stem for p in INVENTORIES])
def test_hostile_inventory_is_one_error_line_and_exit_2(path: Path) -> None:
    position, text = expectation(path)
    assert_one_error(tsops("check", str(path)), f"{path}:{position}", text)


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("path", POLICIES, ids=[p.stem for p in POLICIES])
def test_hostile_policy_file_is_one_error_line_and_exit_2(path: Path, tmp_path: Path) -> None:
    position, text = expectation(path)
    policy = tmp_path / "policy.hujson"
    shutil.copyfile(path, policy)
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(VALID + "policy: {source: file, file: policy.hujson}\n")
    before = policy.read_bytes()
    for command in ("diff", "apply"):
        result = tsops("policy", command, str(inventory), "--no-input",
                       *(["--allow-unverified-recorder"] if command == "apply" else []))
        assert_one_error(result, f"{policy}:{position}", text)
    assert policy.read_bytes() == before


@pytest.mark.timeout(TIMEOUT)
def test_a_huge_inventory_is_refused_naming_the_line_where_the_limit_is_crossed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "huge.yaml"
    line = "# " + "x" * 97 + "\n"  # 100 bytes
    count = MAX_BYTES // len(line) * 4
    text = VALID + line * count
    path.write_text(text)
    crossed = text[:MAX_BYTES].count("\n") + 1
    assert crossed > 1000
    assert_one_error(tsops("check", str(path)), f"{path}:{crossed}",
                     f"the inventory is larger than {MAX_BYTES // 1024} KiB")


def test_an_inventory_just_under_the_limit_loads(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text(VALID + "#" * (MAX_BYTES - len(VALID) - 1) + "\n")
    assert path.stat().st_size == MAX_BYTES
    assert load_inventory(path).targets[0].name == "web1"


@pytest.mark.timeout(TIMEOUT)
def test_an_endless_inventory_is_read_only_up_to_the_limit(tmp_path: Path) -> None:
    """A path to a stream that never ends (a FIFO fed forever) is refused, not read to the end."""
    fifo = tmp_path / "inventory.yaml"
    os.mkfifo(fifo)
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sys\nchunk = b'# ' + b'y' * 1021 + b'\\n'\n"
        "with open(sys.argv[1], 'wb') as out:\n"
        "    try:\n        while True: out.write(chunk)\n"
        "    except BrokenPipeError: pass"), str(fifo)], stderr=subprocess.DEVNULL)
    try:
        with pytest.raises(InventoryError) as caught:
            load_inventory(fifo)
    finally:
        writer.kill()
        writer.wait()
    assert caught.value.problems == [
        f"{fifo}:{MAX_BYTES // 1024 + 1}: the inventory is larger than {MAX_BYTES // 1024} KiB "
        "(the limit tsops reads; see docs/inventory.md): is this the right file?"]


FULL = """\
version: 1
tailnet:
  name: example.com
  api_url: https://api.tailscale.com
  login_server: https://ctl.example.com
  credentials:
    oauth:
      client_id: kXYZ123CNTRL
      client_secret: {env: TS_OAUTH_SECRET, keyring: tsops/oauth-secret}
connection:
  user: admin
  identity_file: ~/.ssh/id_ed25519
  jump_host: ops@bastion.example.com:2222
  ssh_config: ssh_config
tailscale:
  install:
    method: tarball
    repository: https://pkgs.tailscale.com/stable
    version: 1.78.3
    tarball:
      url: https://mirror.example.com/tailscale_1.78.3_amd64.tgz
      sha256: 4d6f1a0c4d6f1a0c4d6f1a0c4d6f1a0c4d6f1a0c4d6f1a0c4d6f1a0c4d6f1a0c
servers:
  tags: [tag:server]
  hosts:
    web1: {address: 192.0.2.10, tags: [tag:web], user: deploy, jump_host: bastion}
  groups:
    db:
      tags: [tag:db]
      user: dba
      identity_file: keys/db
      hosts:
        db1: {address: db1.example.com}
recorders:
  tag: tag:recorder
  runtime: binary
  binary: ./tsrecorder
  binary_path: /usr/local/bin/tsrecorder
  container_engine: docker
  service_user: tsrecorder
  statedir: /var/lib/tsrecorder
  hosts:
    rec1: {address: "2001:db8::30"}
storage:
  destination: s3://acme-recordings
  region: eu-central-1
  endpoint: https://s3.eu-central-1.amazonaws.com
  encryption: sse-kms
  kms_key: alias/recordings
  recorder_principal: arn:aws:iam::123456789012:role/recorder
  break_glass_principal: arn:aws:iam::123456789012:role/break-glass
  credentials:
    access_key_id: {env: REC_KEY_ID}
    secret_access_key: {keyring: tsops/rec-secret}
ssh_rules:
  - name: sre
    action: check
    src: [group:sre, alice@example.com]
    dst: [tag:server]
    users: [root, autogroup:nonroot]
    check_period: 12h
    recorder: tag:recorder
policy:
  source: file
  file: policy.hujson
  state_dir: ./state
  tag_owners: [group:sre]
"""


def _string_leaves(node: Any, loc: tuple[str | int, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """(container, key, field path) of every string value in a parsed document."""
    items = node.items() if isinstance(node, CommentedMap) else enumerate(node)
    for key, value in items:
        if isinstance(value, str):
            yield node, key, (*loc, key)
        elif isinstance(value, CommentedMap | CommentedSeq):
            yield from _string_leaves(value, (*loc, key))


def _dotted(loc: tuple[str | int, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def test_the_full_inventory_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text(FULL)
    assert len(load_inventory(path).targets) == 3


@pytest.mark.parametrize("character", ["\n", "\r", "\x00", "\x1b", "\u2028"])
def test_a_control_character_in_any_string_field_is_refused_at_its_line(
    tmp_path: Path, character: str
) -> None:
    """Every string value of a full inventory, one at a time, gets a hostile suffix."""
    path = tmp_path / "inventory.yaml"
    yaml = YAML(typ="rt")
    leaves = list(_string_leaves(yaml.load(FULL)))
    assert len(leaves) >= 45
    for index in range(len(leaves)):
        document = yaml.load(FULL)
        container, key, loc = list(_string_leaves(document))[index]
        container[key] = f"{container[key]}{character}ExecStartPre=+/bin/sh -c id"
        stream = io.StringIO()
        yaml.dump(document, stream)
        path.write_text(stream.getvalue())
        reread = yaml.load(stream.getvalue())
        for part in loc[:-1]:
            reread = reread[part]
        row, col = (reread.lc.value(key) if isinstance(reread, CommentedMap)
                    else reread.lc.item(key))
        with pytest.raises(InventoryError) as caught:
            load_inventory(path)
        (problem,) = caught.value.problems
        field = _dotted(loc)
        parent = _dotted(loc[:-1])
        assert (problem.startswith(f"{path}:{row + 1}:{col + 1}: {field}: ")
                or (loc[-1] == "env" and f" {parent}: " in problem)), (field, problem)
