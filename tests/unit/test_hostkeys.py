"""Host keys of every SSH hop, against known_hosts: the parser and matcher, appending, and real
SSH handshakes with loopback servers (a target, a bastion) through tsops.remote.Remote."""

from __future__ import annotations

import base64
import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from tests.unit.ssh_server import HungServer, SshServer, client_key
from tsops import hostkeys
from tsops.inventory.load import Target
from tsops.remote import HostUnreachable, Remote


def sha256(key: paramiko.PKey) -> str:
    """The fingerprint as `ssh-keygen -l` prints it, computed here from the key's blob."""
    blob = base64.b64decode(key.get_base64())
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def target(port: int, address: str = "127.0.0.1", jump_host: str | None = None) -> Target:
    return Target(name="host1", role="server", group=None, address=address, tags=(),
                  user="root", port=port, identity_file=None, sudo=False, jump_host=jump_host,
                  line=1)


class Setup:
    """An ssh_config naming a client key and this test's own known_hosts files."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.key = client_key(folder)
        self.known = folder / "known_hosts"
        self.global_known = folder / "global_known_hosts"
        self.config = folder / "ssh_config"
        self.write_config()

    def write_config(self, strict: str = "yes", extra: str = "") -> None:
        self.config.write_text(
            f"{extra}Host *\n  IdentityFile {self.key}\n  UserKnownHostsFile {self.known}\n"
            f"  GlobalKnownHostsFile {self.global_known}\n  StrictHostKeyChecking {strict}\n")

    def remote(self, host: Target, timeout: float = 10) -> Remote:
        return Remote(host, ssh_config=str(self.config), timeout=timeout)

    def refusal(self, host: Target, timeout: float = 10) -> str:
        remote = self.remote(host, timeout)
        with pytest.raises(HostUnreachable) as raised:
            remote.run("true")
        remote.close()
        return str(raised.value)


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    return Setup(tmp_path)


@pytest.fixture
def server() -> Iterator[SshServer]:
    with SshServer() as running:
        yield running


@pytest.fixture
def bastion() -> Iterator[SshServer]:
    with SshServer() as running:
        yield running


# The parser and the matcher.

def test_host_patterns_follow_openssh() -> None:
    assert hostkeys.host_matches("web1,web2", "web2")
    assert hostkeys.host_matches("*.example.com", "DB.example.com")
    assert hostkeys.host_matches("10.0.0.?", "10.0.0.7")
    assert not hostkeys.host_matches("10.0.0.?", "10.0.0.17")
    assert not hostkeys.host_matches("*.example.com,!db.example.com", "db.example.com")
    assert hostkeys.host_matches("[10.0.0.1]:2222", "[10.0.0.1]:2222")
    assert not hostkeys.host_matches("10.0.0.1", "[10.0.0.1]:2222")
    hashed = paramiko.HostKeys.hash_host("[10.0.0.1]:2222")
    assert hostkeys.host_matches(hashed, "[10.0.0.1]:2222")
    assert not hostkeys.host_matches(hashed, "10.0.0.1")
    assert hostkeys.lookup_name("h", 22) == "h" and hostkeys.lookup_name("h", 2) == "[h]:2"


def test_markers_comments_and_broken_lines(tmp_path: Path) -> None:
    key = paramiko.ECDSAKey.generate().get_base64()
    text = (f"# a comment\n\n@cert-authority *.example.com ecdsa-sha2-nistp256 {key}\n"
            f"@revoked * ecdsa-sha2-nistp256 {key}\n@unknown-marker h ssh-ed25519 {key}\n"
            f"web1 ecdsa-sha2-nistp256\nweb2 ecdsa-sha2-nistp256 not*base64\n"
            f"web3,web4 ecdsa-sha2-nistp256 {key} trailing comment\n")
    entries = hostkeys.parse(text, tmp_path / "kh")
    assert [(e.marker, e.hosts, e.line) for e in entries] == [
        ("cert-authority", "*.example.com", 3), ("revoked", "*", 4), (None, "web3,web4", 8)]
    known = hostkeys.KnownHosts(tuple(entries), (), None)
    assert known.keys_for("web3") == []  # its key is revoked: never offered to paramiko
    assert known.authorities_for("a.example.com")[0].line == 3


def test_a_hashed_append_matches_only_its_host(tmp_path: Path) -> None:
    key = paramiko.ECDSAKey.generate()
    known = hostkeys.KnownHosts((), (), tmp_path / "sub" / "known_hosts")
    path = known.append("[10.0.0.1]:2222", key.get_name(), key.get_base64(), hashed=True)
    [entry] = hostkeys.parse(path.read_text(), path)
    assert entry.hosts.startswith("|1|") and entry.key == key.get_base64()
    assert hostkeys.host_matches(entry.hosts, "[10.0.0.1]:2222")
    assert not hostkeys.host_matches(entry.hosts, "10.0.0.1")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"


def test_the_fingerprint_is_ssh_keygen_s(tmp_path: Path) -> None:
    key = paramiko.ECDSAKey.generate()
    (tmp_path / "k.pub").write_text(f"{key.get_name()} {key.get_base64()}\n")
    listed = subprocess.run(["ssh-keygen", "-lf", str(tmp_path / "k.pub")], check=True,
                            capture_output=True, text=True).stdout.split()[1]
    assert hostkeys.fingerprint(key.asbytes()) == listed == sha256(key)


def test_user_and_global_files_come_from_ssh_config() -> None:
    assert hostkeys.files_from_config({}) == (
        tuple(Path(p).expanduser() for p in hostkeys.USER_FILES),
        tuple(Path(p) for p in hostkeys.GLOBAL_FILES))
    assert hostkeys.files_from_config({"userknownhostsfile": "/a /b",
                                       "globalknownhostsfile": "none"}) == (
        (Path("/a"), Path("/b")), ())


# Real handshakes.

def test_a_known_target_through_a_known_bastion(setup: Setup, server: SshServer,
                                                bastion: SshServer) -> None:
    setup.known.write_text(server.known_line() + bastion.known_line())
    remote = setup.remote(target(server.port, jump_host=f"root@127.0.0.1:{bastion.port}"))
    assert remote.run("true").ok
    assert remote._connection is not None
    jump = remote._connection.gateway
    assert jump.is_connected
    remote.close()
    assert not jump.is_connected  # closing the host closes the jump host's connection too
    assert (bastion.accepted, server.accepted) == (1, 1)


def test_a_bastion_with_an_unknown_key_is_refused_and_the_target_never_contacted(
        setup: Setup, server: SshServer, bastion: SshServer) -> None:
    setup.known.write_text(server.known_line())
    reason = setup.refusal(target(server.port, jump_host=f"root@127.0.0.1:{bastion.port}"))
    assert reason.startswith("host1: jump host 127.0.0.1: unknown host key (ecdsa-sha2-nistp256 "
                             f"key {sha256(bastion.host_key)})")
    assert reason.endswith("; host1 was not contacted")
    assert "\n" not in reason
    assert (bastion.accepted, server.accepted) == (1, 0)
    assert setup.known.read_text() == server.known_line()


def test_a_bastion_whose_key_changed_is_refused_and_the_target_never_contacted(
        setup: Setup, server: SshServer, bastion: SshServer) -> None:
    old = paramiko.ECDSAKey.generate()
    setup.known.write_text(server.known_line()
                           + f"[127.0.0.1]:{bastion.port} {old.get_name()} {old.get_base64()}\n")
    setup.write_config("accept-new")  # accept-new never accepts a changed key
    reason = setup.refusal(target(server.port, jump_host=f"root@127.0.0.1:{bastion.port}"))
    assert f"jump host 127.0.0.1: host key changed: it offered ecdsa-sha2-nistp256 key " \
           f"{sha256(bastion.host_key)}, known_hosts has ecdsa-sha2-nistp256 key " \
           f"{sha256(old)}" in reason
    assert reason.endswith("; host1 was not contacted")
    assert server.accepted == 0


def test_a_proxyjump_chain_from_ssh_config_is_checked_hop_by_hop(
        setup: Setup, bastion: SshServer) -> None:
    # fabric takes a hop on the target's own address for a loop and drops it: the target
    # listens on another loopback address.
    with SshServer("127.0.0.2") as server:
        proxyjump_chain(setup, server, bastion)


def proxyjump_chain(setup: Setup, server: SshServer, bastion: SshServer) -> None:
    setup.write_config(extra=f"Host target\n  HostName 127.0.0.2\n"
                             f"  ProxyJump root@127.0.0.1:{bastion.port}\n")
    setup.known.write_text(server.known_line())
    reason = setup.refusal(target(server.port, address="target"))
    assert f"jump host 127.0.0.1: unknown host key (ecdsa-sha2-nistp256 key " \
           f"{sha256(bastion.host_key)})" in reason
    assert server.accepted == 0
    setup.known.write_text(server.known_line() + bastion.known_line())
    remote = setup.remote(target(server.port, address="target"))
    assert remote.run("true").ok
    remote.close()
    assert (bastion.accepted, server.accepted) == (2, 1)


def test_an_unknown_target_is_refused_with_its_fingerprint(setup: Setup,
                                                           server: SshServer) -> None:
    reason = setup.refusal(target(server.port))
    assert reason.startswith(f"host1: 127.0.0.1: unknown host key (ecdsa-sha2-nistp256 key "
                             f"{sha256(server.host_key)}), not in known_hosts ({setup.known}, ")
    assert not setup.known.exists()


def test_the_global_known_hosts_file_is_read(setup: Setup, server: SshServer) -> None:
    setup.global_known.write_text(server.known_line())
    remote = setup.remote(target(server.port))
    assert remote.run("true").ok
    remote.close()


def test_a_revoked_key_is_refused_even_when_listed(setup: Setup, server: SshServer) -> None:
    setup.known.write_text(server.known_line() + server.known_line("@revoked *"))
    setup.write_config("accept-new")
    reason = setup.refusal(target(server.port))
    assert f"its ecdsa-sha2-nistp256 key {sha256(server.host_key)} is revoked " \
           f"({setup.known}:2)" in reason


def test_a_revoked_key_is_named_revoked_when_another_key_is_known(
        setup: Setup, server: SshServer) -> None:
    other = paramiko.ECDSAKey.generate()
    setup.known.write_text(f"[127.0.0.1]:{server.port} {other.get_name()} {other.get_base64()}\n"
                           + server.known_line("@revoked *"))
    reason = setup.refusal(target(server.port))
    assert reason == (f"host1: 127.0.0.1: its ecdsa-sha2-nistp256 key {sha256(server.host_key)} "
                      f"is revoked ({setup.known}:2): refusing to connect")


def test_a_host_known_only_by_a_certificate_authority_is_refused_clearly(
        setup: Setup, server: SshServer) -> None:
    authority = paramiko.ECDSAKey.generate()
    setup.known.write_text(f"@cert-authority [127.0.0.1]:* {authority.get_name()} "
                           f"{authority.get_base64()}\n")
    setup.write_config("accept-new")  # no blind trust where a CA was meant to vouch
    reason = setup.refusal(target(server.port))
    assert f"host1: 127.0.0.1: known_hosts trusts a certificate authority for it " \
           f"({setup.known}:1), but tsops cannot check host certificates" in reason
    assert sha256(server.host_key) in reason
    assert setup.known.read_text().count("\n") == 1


def test_accept_new_appends_one_line_and_keeps_everything_else(
        setup: Setup, server: SshServer) -> None:
    other = paramiko.ECDSAKey.generate()
    before = (f"# fleet keys, reviewed\n@cert-authority *.example.com {other.get_name()} "
              f"{other.get_base64()}\n@revoked * {other.get_name()} {other.get_base64()}\n"
              f"|1|c2FsdA==|aGFzaA== {other.get_name()} {other.get_base64()}")  # no final \n
    setup.known.write_text(before)
    setup.write_config("accept-new")
    for _ in range(2):  # the second connection finds the key: nothing more is written
        remote = setup.remote(target(server.port))
        assert remote.run("true").ok
        remote.close()
    assert setup.known.read_text() == before + "\n" + server.known_line()


# Bounded waits.

def test_a_hung_sshd_fails_in_one_line_naming_the_banner(setup: Setup) -> None:
    with HungServer() as hung:
        reason = setup.refusal(target(hung.port), timeout=1)
    assert reason == (f"host1: timed out within 1 s waiting for the SSH banner "
                      f"(at 127.0.0.1:{hung.port})")


def test_a_hung_bastion_fails_and_the_target_is_not_contacted(
        setup: Setup, server: SshServer) -> None:
    setup.known.write_text(server.known_line())
    with HungServer() as hung:
        reason = setup.refusal(target(server.port, jump_host=f"root@127.0.0.1:{hung.port}"),
                               timeout=1)
    assert reason == (f"host1: jump host 127.0.0.1: timed out within 1 s waiting for the SSH "
                      f"banner (at 127.0.0.1:{hung.port}); host1 was not contacted")
    assert server.accepted == 0
