"""The lab: real Debian hosts booted with systemd-nspawn on a private bridge.

Each host is a container with systemd as PID 1, in its own network namespace, with its own
hostname, a private overlay over the shared cached rootfs, its own SSH host key, and the lab's
client key authorised for root. See ../../../shared/guide/lab-facts.md for what was measured.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any

from tests.lab import config
from tests.lab.errors import LabError, LabUnavailable
from tests.lab.journal import Journal, reap_stale
from tests.lab.managed import Managed
from tests.lab.rootfs import check_prerequisites, ensure_rootfs

if TYPE_CHECKING:
    from fabric import Connection


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a host-side command, raising LabError with its stderr when it fails."""
    result = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    if result.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


@dataclass
class LabHost:
    """One running lab host."""

    name: str
    ip: str
    netns: str
    veth: str
    workdir: Path
    lab: Lab
    process: subprocess.Popen[bytes] | None = None
    console: IO[bytes] | None = None

    @property
    def console_log(self) -> Path:
        """Where the container's console output goes."""
        return self.workdir / "console.log"

    def leader_pid(self) -> int:
        """Return the PID (in the root namespace) of the container's systemd."""
        assert self.process is not None
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                for pid in children.read_text().split():
                    return int(pid)
            time.sleep(0.05)
        raise LabError(f"{self.name}: container has no init process")

    def nsenter(
        self, command: str, *, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command inside the container without SSH (for setup and assertions)."""
        argv = ["nsenter", "-t", str(self.leader_pid()), "-a", "sh", "-c", command]
        result = subprocess.run(argv, capture_output=True, text=True, input=input, check=False)
        if check and result.returncode != 0:
            raise LabError(f"{self.name}: `{command}` failed: {result.stderr.strip()}")
        return result

    def wait_until_running(self) -> None:
        """Wait for systemd to finish booting; raise LabError naming failed units if degraded."""
        state = self.nsenter("systemctl is-system-running --wait", check=False).stdout.strip()
        if state != "running":
            failed = self.nsenter(
                "systemctl --failed --no-legend --plain; "
                "journalctl -b --no-pager -p warning -n 30", check=False
            ).stdout
            raise LabError(f"{self.name}: systemd is {state!r}:\n{failed}")

    def connection(self, user: str = "root") -> Connection:
        """Return a Fabric connection that trusts only this host's real host key."""
        from fabric import Config, Connection
        from paramiko import RejectPolicy

        conn = Connection(
            self.ip,
            user=user,
            # Tests never type into remote commands; reading our stdin breaks under pytest.
            config=Config(overrides={"run": {"in_stream": False}}),
            connect_kwargs={
                "key_filename": str(self.lab.client_key),
                "look_for_keys": False,
                "allow_agent": False,
            },
            connect_timeout=10,
        )
        conn.client.set_missing_host_key_policy(RejectPolicy())
        conn.client.load_host_keys(str(self.lab.known_hosts))
        return conn

    def wait_for_ssh(self, deadline: float) -> None:
        """Block until sshd on the host sends its banner, or raise LabError at `deadline`."""
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise LabError(
                    f"{self.name}: container exited with {self.process.returncode}; "
                    f"console: {self.console_log}"
                )
            try:
                with socket.create_connection((self.ip, 22), timeout=1) as sock:
                    sock.settimeout(2)
                    if sock.recv(64).startswith(b"SSH-2.0"):
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise LabError(f"{self.name}: no SSH after {config.BOOT_TIMEOUT_S}s; {self.console_log}")


@dataclass
class Lab(Managed):
    """N real Debian hosts on a bridge the lab owns; a context manager that always cleans up."""

    host_count: int = 1
    host_names: list[str] | None = None
    # Ask for one particular slot (the demo does: inventories/lab.yaml addresses slot 0).
    requested_slot: int | None = None
    hosts: list[LabHost] = field(default_factory=list)
    slot: int = -1
    workdir: Path = Path()
    journal: Journal | None = None
    _slot_lock: IO[str] | None = None
    _previous_sigterm: Any = None

    @property
    def network(self) -> ipaddress.IPv4Network:
        """The /24 this lab owns."""
        return config.slot_network(self.slot)

    @property
    def gateway(self) -> str:
        """The control machine's address on the lab bridge."""
        return str(self.network[config.GATEWAY_OFFSET])

    @property
    def tailnet_network(self) -> ipaddress.IPv4Network:
        """The /24 of the tailnet range this lab's control simulator hands out (see config)."""
        return config.slot_tailnet(self.slot)

    @property
    def operator_address(self) -> str:
        """The control machine's tailnet address, on the lab bridge (the operator's node)."""
        return str(self.tailnet_network[config.OPERATOR_OFFSET])

    @property
    def bridge(self) -> str:
        """The lab bridge's interface name."""
        return f"{config.NAME_PREFIX}{self.slot}br"

    @property
    def client_key(self) -> Path:
        """The private key the lab's hosts accept for root."""
        return self.workdir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        """A known_hosts file with every host's real key."""
        return self.workdir / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        """An ssh_config naming every host, for `ssh -F` and for tsops."""
        return self.workdir / "ssh_config"

    def host(self, name: str) -> LabHost:
        """Return the host called `name`."""
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)

    def start(self) -> None:
        """Boot every host in parallel and wait until each answers SSH."""
        check_prerequisites()
        reap_stale()
        rootfs = ensure_rootfs()
        self._install_sigterm_handler()
        self.journal = Journal.create()
        self._claim_slot()
        self.journal.add_dir(self.workdir)
        self.workdir.mkdir(parents=True)
        self._make_client_key()
        names = self.host_names or [f"host{i + 1}" for i in range(self.host_count)]
        self._create_bridge()
        for index, name in enumerate(names):
            self.hosts.append(self._create_host_network(index, name))
        self._write_ssh_files()
        for cgroup in self._cgroups():
            self.journal.add_cgroup(cgroup)
        for host in self.hosts:
            self._boot(host, rootfs)
        deadline = time.monotonic() + config.BOOT_TIMEOUT_S
        for host in self.hosts:
            host.wait_for_ssh(deadline)

    def stop(self) -> None:
        """Power off every host and remove every namespace, link, process and file."""
        if self.journal is not None:
            self.journal.cleanup()
            self.journal = None
        for host in self.hosts:
            if host.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    host.process.wait(timeout=1)
            if host.console is not None:
                host.console.close()
        self.hosts.clear()
        if self._slot_lock is not None:
            self._slot_lock.close()
            self._slot_lock = None
        if self._previous_sigterm is not None:
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None

    def register_process(self, process: subprocess.Popen[Any]) -> None:
        """Make a server the lab started part of its cleanup."""
        assert self.journal is not None
        self.journal.add_pid(process.pid)

    def _install_sigterm_handler(self) -> None:
        """Turn SIGTERM into SystemExit so that context managers and fixtures clean up."""
        with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
            if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:

                def on_sigterm(signum: int, frame: FrameType | None) -> None:
                    sys.exit(128 + signum)

                self._previous_sigterm = signal.signal(signal.SIGTERM, on_sigterm)

    def _claim_slot(self) -> None:
        """Take the first free /24 of the lab network; the lock dies with this process."""
        slots = config.RUN_DIR / "slots"
        slots.mkdir(parents=True, exist_ok=True)
        wanted = (
            [self.requested_slot] if self.requested_slot is not None
            else range(config.slot_count())
        )
        for slot in wanted:
            lock = (slots / f"{slot}.lock").open("w")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            self.slot, self._slot_lock = slot, lock
            self.workdir = config.RUN_DIR / f"lab-{slot}"
            if self.workdir.exists():  # left by a lab whose journal was lost
                run(["rm", "-rf", "--one-file-system", str(self.workdir)])
            return
        if self.requested_slot is not None:
            raise LabUnavailable(f"lab slot {self.requested_slot} is in use by another lab")
        raise LabUnavailable(f"all {config.slot_count()} lab slots are in use")

    def _make_client_key(self) -> None:
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tsops-lab",
             "-f", str(self.client_key)])

    def _create_bridge(self) -> None:
        assert self.journal is not None
        self.journal.add_link(self.bridge)
        run(["ip", "link", "add", self.bridge, "type", "bridge"])
        run(["ip", "addr", "add", f"{self.gateway}/{self.network.prefixlen}", "dev", self.bridge])
        # The control machine's tailnet address: its connections to the lab's tailnet
        # prefix leave through the bridge, from this address (no WireGuard in the lab). It goes
        # with the bridge.
        run(["ip", "addr", "add", f"{self.operator_address}/{self.tailnet_network.prefixlen}",
             "dev", self.bridge])
        run(["ip", "link", "set", self.bridge, "up"])

    def _create_host_network(self, index: int, name: str) -> LabHost:
        assert self.journal is not None
        ip = str(self.network[config.FIRST_HOST_OFFSET + index])
        netns = f"{config.NAME_PREFIX}{self.slot}-{name}"
        veth = f"{config.NAME_PREFIX}{self.slot}v{index}"
        workdir = self.workdir / name
        workdir.mkdir()
        self.journal.add_netns(netns)
        run(["ip", "netns", "add", netns])
        self.journal.add_link(veth)
        run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns])
        run(["ip", "link", "set", veth, "master", self.bridge, "up"])
        run(["ip", "-n", netns, "addr", "add", f"{ip}/{self.network.prefixlen}", "dev", "eth0"])
        run(["ip", "-n", netns, "link", "set", "eth0", "up"])
        run(["ip", "-n", netns, "link", "set", "lo", "up"])
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name,
             "-f", str(workdir / "ssh_host_ed25519_key")])
        # OpenSSH listens on the lab address only, so that the node's tailnet address :22 is
        # free for Tailscale SSH (tailscaled), as on a real server where sshd and Tailscale SSH
        # each answer on their own address.
        (workdir / "sshd_listen.conf").write_text(f"ListenAddress {ip}:22\n")
        return LabHost(name=name, ip=ip, netns=netns, veth=veth, workdir=workdir, lab=self)

    def _write_ssh_files(self) -> None:
        known, cfg = [], []
        for host in self.hosts:
            public = (host.workdir / "ssh_host_ed25519_key.pub").read_text().split()
            known.append(f"{host.ip} {public[0]} {public[1]}\n")
            cfg.append(
                f"Host {host.name}\n  HostName {host.ip}\n  User root\n"
                f"  IdentityFile {self.client_key}\n  IdentitiesOnly yes\n"
                f"  UserKnownHostsFile {self.known_hosts}\n  StrictHostKeyChecking yes\n"
            )
        self.known_hosts.write_text("".join(known))
        self.ssh_config.write_text("\n".join(cfg))

    def _boot(self, host: LabHost, rootfs: Path) -> None:
        assert self.journal is not None
        key = host.workdir / "ssh_host_ed25519_key"
        argv = [
            "systemd-nspawn", "--boot", f"--directory={rootfs}",
            # Without a host systemd to register with, these are the flags that work here.
            "--register=no", "--keep-unit", "--volatile=overlay",
            f"--network-namespace-path=/run/netns/{host.netns}",
            # The host's own network namespace is its to configure, as on a real server
            # (tailscaled puts its tailnet address on eth0): nspawn grants CAP_NET_ADMIN only
            # with --private-network, which cannot be combined with a given namespace.
            "--capability=CAP_NET_ADMIN",
            "--console=read-only", f"--hostname={host.name}", f"--machine={self._machine(host)}",
            f"--bind-ro={key}:/etc/ssh/ssh_host_ed25519_key",
            f"--bind-ro={key}.pub:/etc/ssh/ssh_host_ed25519_key.pub",
            f"--bind-ro={self.client_key}.pub:/root/.ssh/authorized_keys",
            f"--bind-ro={host.workdir / 'sshd_listen.conf'}:/etc/ssh/sshd_config.d/listen.conf",
        ]
        # Each container gets cgroups of its own: containers sharing one race each other when
        # their systemd creates and removes the same unit cgroups (seen: "Failed at step CGROUP").
        cgroups = []
        for lab_cgroup in self._cgroups():
            (lab_cgroup / host.name).mkdir(parents=True, exist_ok=True)
            cgroups.append(str(lab_cgroup / host.name))
        enter = 'for cg in "$@"; do [ "$cg" = -- ] && break; echo $$ > "$cg/cgroup.procs"; done'
        wrapper = ["sh", "-c", f'{enter}; shift {len(cgroups) + 1}; exec "$@"', "sh",
                   *cgroups, "--"]
        host.console = host.console_log.open("wb")
        host.process = subprocess.Popen(
            [*wrapper, *argv],
            stdin=subprocess.DEVNULL,
            stdout=host.console,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.journal.add_pid(host.process.pid)

    def _cgroups(self) -> list[Path]:
        """This lab's cgroup in every cgroup hierarchy the machine has."""
        return [
            hierarchy / config.CGROUP_NAME / f"lab-{self.slot}"
            for hierarchy in config.CGROUP_HIERARCHIES
            if (hierarchy / "cgroup.procs").exists()
        ]

    def _machine(self, host: LabHost) -> str:
        return f"{config.NAME_PREFIX}{self.slot}-{host.name}-{os.getpid()}"
