"""Benchmark `tsops plan` and `tsops status` on 50, 100 and 200 lightweight hosts.

Run by hand as root (numbers go to docs/performance.md, "Scale"):
    .venv/bin/python -m bench.scale --hosts 50,100,200 [--runs 3] [--handshakes 50]

A host here is an OpenSSH server in a network namespace of its own, with a veth onto a bridge
this bench creates; no systemd and no container. Each host's sshd runs chrooted in the lab's
cached Debian rootfs (mounted read-only in a private mount namespace, with tmpfs on /run and
/tmp), so the probe reads a Debian 12 host and nothing tsops runs can write to this machine or
to the shared rootfs. In the host's own PID namespace, PID 1 is a stand-in that only sleeps,
started under the name `systemd`: the planner goes past its init check as on a real server
while no unit exists, so every host plans as a fresh Debian server (repository, install,
enroll). The control simulator (tests/sim/control) answers the API on loopback.

What is measured, per run of tsops as a subprocess: wall time; tsops's CPU (user+sys of the
tsops process, from wait4: the hosts' sshd are not its children, so they are not counted);
its peak RSS; the hosts' own CPU (every process of every host, sshd's reaped session children
included, from /proc); the control simulator's (this process's own CPU during the run); and
the machine's busy CPU (from /proc/stat, other people's work included).

With --handshakes N, a bare paramiko loop (connect, authenticate, one exec, close) against one
host prices an SSH connection from the client's side, for ed25519 and RSA keys.

Every name starts with `tsb` (the lab's start with `tsl`); the network is a free /24 of
10.214.0.0/16 taken by lock (the lab's is 10.213.0.0/16). Everything is written to a lab
journal before it is created and removed at the end, on failure and on Ctrl-C or SIGTERM
(after a SIGKILL, the next lab to start reaps it).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import ipaddress
import itertools
import json
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

from ruamel.yaml import YAML

from bench.fanout import machine_busy_seconds
from bench.lab import descendants
from tests.lab.journal import Journal
from tests.lab.managed import Managed
from tests.lab.rootfs import ensure_rootfs

NAME_PREFIX = "tsb"
NETWORK = ipaddress.IPv4Network("10.214.0.0/16")
SLOT_PREFIXLEN = 24
GATEWAY_OFFSET = 1
FIRST_HOST_OFFSET = 10
MAX_HOSTS = 240
RUN_DIR = Path("/run/tsops-bench")
TOKEN_VARIABLE = "TSOPS_BENCH_API_TOKEN"  # noqa: S105 (the name of a variable)
READY_TIMEOUT_S = 120.0
COMMANDS = ("plan", "status")

# Runs inside the host's new mount and PID namespaces (argv: root mountpoint, rootfs, host dir).
HOST_SCRIPT = r"""
set -e
R=$1 ROOTFS=$2 HOST=$3
mount --bind "$ROOTFS" "$R"
mount -o remount,bind,ro "$R"
mount -t proc proc "$R/proc"
mount --bind /dev "$R/dev"
mount -t tmpfs -o mode=755 tmpfs "$R/run"
mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"
mkdir -p "$R/run/sshd" "$R/run/tsops-bench/init"
cp "$HOST/sshd_config" "$HOST/ssh_host_key" "$HOST/authorized_keys" "$R/run/tsops-bench/"
ln -s /usr/bin/sleep "$R/run/tsops-bench/init/systemd"
chroot "$R" /usr/sbin/sshd -D -e -f /run/tsops-bench/sshd_config &
exec chroot "$R" /run/tsops-bench/init/systemd infinity
"""

SSHD_CONFIG = """\
ListenAddress {ip}:22
HostKey /run/tsops-bench/ssh_host_key
AuthorizedKeysFile /run/tsops-bench/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PidFile none
LogLevel ERROR
Subsystem sftp /usr/lib/openssh/sftp-server
"""


# Pure helpers (tests/unit/test_bench_scale.py)

def parse_sizes(text: str) -> list[int]:
    """`50,100,200` -> [50, 100, 200]; each between 1 and MAX_HOSTS."""
    sizes = [int(part) for part in text.split(",") if part.strip()]
    if not sizes or any(not 1 <= size <= MAX_HOSTS for size in sizes):
        raise ValueError(f"host counts must be between 1 and {MAX_HOSTS}: {text!r}")
    return sizes


def slot_network(slot: int) -> ipaddress.IPv4Network:
    """The /24 of the bench's network that slot `slot` owns."""
    subnets = list(NETWORK.subnets(new_prefix=SLOT_PREFIXLEN))
    return subnets[slot]


def host_address(network: ipaddress.IPv4Network, index: int) -> str:
    """The address of host number `index` (0-based) in `network`."""
    if not 0 <= index < MAX_HOSTS:
        raise ValueError(f"host index {index} is outside 0..{MAX_HOSTS - 1}")
    return str(network[FIRST_HOST_OFFSET + index])


def process_cpu_seconds(stat: str, ticks: int) -> float:
    """utime+stime+cutime+cstime of a /proc/PID/stat line, in seconds (reaped children
    included: sshd's finished sessions are counted in its cutime)."""
    fields = stat.rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / ticks


@dataclass(frozen=True)
class Measurement:
    """One run of one tsops command on `hosts` hosts."""

    command: str
    hosts: int
    wall_s: float
    tsops_cpu_s: float
    max_rss_mib: float
    hosts_cpu_s: float
    control_cpu_s: float
    machine_cpu_s: float
    load: float

    @property
    def tsops_cpu_per_host_ms(self) -> float:
        """tsops's CPU per host, in milliseconds."""
        return 1000 * self.tsops_cpu_s / self.hosts

    def floor_s(self, cores: int) -> float:
        """The target's floor: max(tsops CPU / cores, the hosts' own work / cores)."""
        return max(self.tsops_cpu_s, self.hosts_cpu_s + self.control_cpu_s) / cores

    def shared_floor_s(self, cores: int) -> float:
        """The floor on this machine, where tsops and the hosts share the same cores."""
        return (self.tsops_cpu_s + self.hosts_cpu_s + self.control_cpu_s) / cores


def median_run(runs: Sequence[Measurement]) -> Measurement:
    """The run with the median wall time (a real run, so its columns belong together)."""
    ordered = sorted(runs, key=lambda m: m.wall_s)
    return ordered[(len(ordered) - 1) // 2]


def marginal_ms(smaller: Measurement, larger: Measurement) -> float:
    """tsops CPU per host added between two fleet sizes, in milliseconds (start-up excluded)."""
    return 1000 * (larger.tsops_cpu_s - smaller.tsops_cpu_s) / (larger.hosts - smaller.hosts)


BASELINE_BELOW = 10  # smaller fleets measure tsops's start-up, not its cost per host


def flatness(per_host: dict[int, float]) -> float:
    """How far tsops CPU per host at the largest size is from the smallest's (0.1: 10% more);
    sizes under BASELINE_BELOW are left out."""
    fleets = {size: cpu for size, cpu in per_host.items() if size >= BASELINE_BELOW} or per_host
    smallest, largest = min(fleets), max(fleets)
    return fleets[largest] / fleets[smallest] - 1


# The fleet

@dataclass
class BenchHost:
    """One lightweight host: a namespace, a veth, an sshd."""

    name: str
    ip: str
    netns: str
    veth: str
    workdir: Path
    process: subprocess.Popen[bytes] | None = None

    def cpu_seconds(self) -> float:
        """CPU spent by every process of this host so far (live ones and reaped ones)."""
        if self.process is None:
            return 0.0
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in descendants(self.process.pid):
            with contextlib.suppress(OSError, IndexError, ValueError):
                total += process_cpu_seconds(Path(f"/proc/{pid}/stat").read_text(), ticks)
        return total


@dataclass
class Fleet(Managed):
    """`size` lightweight hosts on a bridge of the bench's own; always cleaned up."""

    size: int
    # One known_hosts file per host instead of one for the fleet (to tell the cost of reading
    # a fleet-sized known_hosts for every connection from the rest).
    split_known_hosts: bool = False
    hosts: list[BenchHost] = field(default_factory=list)
    slot: int = -1
    workdir: Path = Path()
    journal: Journal | None = None
    _lock: IO[str] | None = None
    _logs: list[IO[bytes]] = field(default_factory=list)

    @property
    def network(self) -> ipaddress.IPv4Network:
        """The /24 this fleet owns."""
        return slot_network(self.slot)

    @property
    def bridge(self) -> str:
        """The bridge's interface name."""
        return f"{NAME_PREFIX}{self.slot}br"

    @property
    def client_key(self) -> Path:
        """The key every host accepts for root."""
        return self.workdir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        """Every host's real key."""
        return self.workdir / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        """An ssh_config naming every host, as an operator's would."""
        return self.workdir / "ssh_config"

    def start(self) -> None:
        """Create the bridge and the hosts, start every sshd and wait until each answers."""
        if os.geteuid() != 0:
            raise SystemExit("bench.scale needs root (network namespaces, mounts)")
        rootfs = ensure_rootfs()
        self.journal = Journal.create()
        self._claim_slot()
        self.journal.add_dir(self.workdir)
        self.workdir.mkdir(parents=True)
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tsops-bench",
              "-f", str(self.client_key)])
        self.journal.add_link(self.bridge)
        _run(["ip", "link", "add", self.bridge, "type", "bridge"])
        gateway = self.network[GATEWAY_OFFSET]
        _run(["ip", "addr", "add", f"{gateway}/{SLOT_PREFIXLEN}", "dev", self.bridge])
        _run(["ip", "link", "set", self.bridge, "up"])
        for index in range(self.size):
            self.hosts.append(self._create_host(index))
        self._write_ssh_files()
        for host in self.hosts:
            self._boot(host, rootfs)
        deadline = time.monotonic() + READY_TIMEOUT_S
        for host in self.hosts:
            _wait_for_banner(host, deadline)

    def stop(self) -> None:
        """Stop every host and remove every namespace, link and file the fleet made."""
        for host in self.hosts:
            # unshare --fork ignores SIGTERM while its child runs: SIGKILL it, and --kill-child
            # takes the host's PID 1, and with it every process of the host, down too.
            if host.process is not None and host.process.poll() is None:
                host.process.kill()
                host.process.wait()
        if self.journal is not None:
            self.journal.cleanup()
            self.journal = None
        for log in self._logs:
            log.close()
        self._logs.clear()
        self.hosts.clear()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def cpu_seconds(self) -> float:
        """CPU spent by every host so far."""
        return sum(host.cpu_seconds() for host in self.hosts)

    def _claim_slot(self) -> None:
        """Take the first /24 that no other bench holds and no interface of this machine uses."""
        slots = RUN_DIR / "slots"
        slots.mkdir(parents=True, exist_ok=True)
        used = _addresses_in_use()
        for slot in range(2 ** (SLOT_PREFIXLEN - NETWORK.prefixlen)):
            if any(address in slot_network(slot) for address in used):
                continue
            lock = (slots / f"{slot}.lock").open("w")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            self.slot, self._lock = slot, lock
            self.workdir = RUN_DIR / f"fleet-{slot}"
            if self.workdir.exists():  # left by a bench that was killed
                _run(["rm", "-rf", "--one-file-system", str(self.workdir)])
            return
        raise SystemExit(f"no free /24 in {NETWORK} for the bench")

    def _create_host(self, index: int) -> BenchHost:
        assert self.journal is not None
        name = f"node{index + 1:03d}"
        ip = host_address(self.network, index)
        host = BenchHost(name, ip, f"{NAME_PREFIX}{self.slot}-{name}",
                         f"{NAME_PREFIX}{self.slot}v{index}", self.workdir / name)
        host.workdir.mkdir()
        (host.workdir / "root").mkdir()
        self.journal.add_netns(host.netns)
        _run(["ip", "netns", "add", host.netns])
        self.journal.add_link(host.veth)
        _run(["ip", "link", "add", host.veth, "type", "veth", "peer", "name", "eth0",
              "netns", host.netns])
        _run(["ip", "link", "set", host.veth, "master", self.bridge, "up"])
        _run(["ip", "-n", host.netns, "addr", "add", f"{ip}/{SLOT_PREFIXLEN}", "dev", "eth0"])
        _run(["ip", "-n", host.netns, "link", "set", "eth0", "up"])
        _run(["ip", "-n", host.netns, "link", "set", "lo", "up"])
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name,
              "-f", str(host.workdir / "ssh_host_key")])
        (host.workdir / "sshd_config").write_text(SSHD_CONFIG.format(ip=ip))
        (host.workdir / "authorized_keys").write_bytes(
            Path(f"{self.client_key}.pub").read_bytes())
        return host

    def _write_ssh_files(self) -> None:
        known, entries = [], []
        for host in self.hosts:
            kind, key = (host.workdir / "ssh_host_key.pub").read_text().split()[:2]
            known.append(f"{host.ip} {kind} {key}\n")
            known_file = self.known_hosts
            if self.split_known_hosts:
                known_file = host.workdir / "known_hosts"
                known_file.write_text(known[-1])
            entries.append(f"Host {host.name}\n  HostName {host.ip}\n  User root\n"
                           f"  IdentityFile {self.client_key}\n  IdentitiesOnly yes\n"
                           f"  UserKnownHostsFile {known_file}\n"
                           "  StrictHostKeyChecking yes\n")
        self.known_hosts.write_text("".join(known))
        self.ssh_config.write_text("\n".join(entries))

    def _boot(self, host: BenchHost, rootfs: Path) -> None:
        assert self.journal is not None
        log = (host.workdir / "sshd.log").open("wb")
        self._logs.append(log)
        host.process = subprocess.Popen(
            ["ip", "netns", "exec", host.netns,
             "unshare", "--mount", "--pid", "--fork", "--kill-child", "--propagation", "private",
             "sh", "-c", HOST_SCRIPT, "sh", str(host.workdir / "root"), str(rootfs),
             str(host.workdir)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.journal.add_pid(host.process.pid)

    def write_inventory(self, path: Path, control_url: str, tailnet: str) -> Path:
        """An inventory of every host, reached through the fleet's ssh_config."""
        document = {
            "version": 1,
            "tailnet": {
                "name": tailnet,
                "api_url": control_url,
                "allow_plain_http": True,
                "login_server": control_url,
                "credentials": {"api_token": {"env": TOKEN_VARIABLE}},
            },
            "connection": {"ssh_config": str(self.ssh_config)},
            "tailscale": {"install": {"method": "apt", "version": "1.80.2"}},
            "servers": {"tags": ["tag:server"],
                        "hosts": {host.name: None for host in self.hosts}},
        }
        with path.open("w") as out:
            YAML().dump(document, out)
        return path


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")


def _addresses_in_use() -> list[ipaddress.IPv4Address]:
    """Every IPv4 address and route destination of the root namespace."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True,
                         check=True).stdout
    routes = subprocess.run(["ip", "-4", "route", "show"], capture_output=True, text=True,
                            check=True).stdout
    found = []
    for word in (out + routes).split():
        with contextlib.suppress(ValueError):
            found.append(ipaddress.IPv4Interface(word).ip)
    return found


def _wait_for_banner(host: BenchHost, deadline: float) -> None:
    while time.monotonic() < deadline:
        if host.process is not None and host.process.poll() is not None:
            log = (host.workdir / "sshd.log").read_text(errors="replace")
            raise RuntimeError(f"{host.name}: exited with {host.process.returncode}: {log}")
        with contextlib.suppress(OSError), \
                socket.create_connection((host.ip, 22), timeout=1) as sock:
            sock.settimeout(2)
            if sock.recv(64).startswith(b"SSH-2.0"):
                return
        time.sleep(0.1)
    raise RuntimeError(f"{host.name}: no SSH banner after {READY_TIMEOUT_S} s")


# Measuring

@contextlib.contextmanager
def control_plane() -> Iterator[Any]:
    """The control simulator on loopback, with an API token for tsops."""
    from tests.sim.control.server import ControlServer

    with ControlServer("127.0.0.1", 0) as control:
        yield control


def run_tsops(command: str, inventory: Path, token: str, concurrency: int, fleet: Fleet,
              size: int, source: Path | None = None) -> Measurement:
    """Run `tsops COMMAND -o json` once and measure it; check every host was probed.

    `source`: run the tsops of that checkout instead (to compare a change with its base)."""
    argv = [sys.executable, "-m", "tsops", command, "-o", "json", "--no-input",
            "--concurrency", str(concurrency), str(inventory)]
    env = {**operator_environment(), TOKEN_VARIABLE: token}
    if source is not None:
        env["PYTHONPATH"] = str(source)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        hosts_before, busy_before = fleet.cpu_seconds(), machine_busy_seconds()
        self_before = resource.getrusage(resource.RUSAGE_SELF)
        load = os.getloadavg()[0]
        began = time.monotonic()
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                   env=env, cwd=source)
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:  # Ctrl-C or SIGTERM: no tsops left behind either
            process.kill()
            process.wait()
            raise
        wall = time.monotonic() - began
        process.returncode = os.waitstatus_to_exitcode(status)
        time.sleep(0.2)  # let the hosts' session processes exit and be reaped
        self_after = resource.getrusage(resource.RUSAGE_SELF)
        hosts_cpu = fleet.cpu_seconds() - hosts_before
        busy = machine_busy_seconds() - busy_before
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    check_report(command, process.returncode, stdout, stderr, size)
    return Measurement(
        command=command, hosts=size, wall_s=wall,
        tsops_cpu_s=usage.ru_utime + usage.ru_stime,
        max_rss_mib=usage.ru_maxrss / 1024,
        hosts_cpu_s=hosts_cpu,
        control_cpu_s=(self_after.ru_utime + self_after.ru_stime
                       - self_before.ru_utime - self_before.ru_stime),
        machine_cpu_s=busy, load=load)


def operator_environment() -> dict[str, str]:
    """This environment, with USER and LOGNAME as an operator's login shell sets them.

    Without them (a bare root shell, some cron jobs and CI runners), paramiko's ssh_config
    lookup asks the password database once per Host block for every connection: a cost that
    grows with the fleet and that an operator's terminal does not pay.
    """
    import pwd

    name = pwd.getpwuid(os.getuid()).pw_name
    return {"USER": name, "LOGNAME": name, **os.environ}


def check_report(command: str, code: int, stdout: str, stderr: str, size: int) -> None:
    """Fail loudly unless tsops reached and planned every host (a fast failure is no result)."""
    try:
        report = json.loads(stdout)
    except ValueError:
        raise RuntimeError(f"tsops {command} exited {code}:\n{stdout}\n{stderr}") from None
    hosts = report.get("hosts", [])
    if len(hosts) != size:
        raise RuntimeError(f"tsops {command}: {len(hosts)} hosts in the report, not {size}")
    failed = [h for h in hosts if _host_failed(command, h)]
    if failed:
        raise RuntimeError(f"tsops {command}: {len(failed)} hosts not probed, e.g. {failed[0]}")


def _host_failed(command: str, host: dict[str, Any]) -> bool:
    if command == "plan":
        return bool(host.get("problem"))
    return not any(check.get("name") == "reachable" and check.get("state") == "ok"
                   for check in host.get("checks", []))


def handshake_cost(fleet: Fleet, count: int, key_type: str) -> tuple[float, float, float]:
    """A bare paramiko loop, one host: connect, authenticate, `true`, close; `count` times.

    Returns (client CPU, server CPU, wall) per connection, in milliseconds; the server's is
    its sshd's and every session process's. The host key and the client key are both
    `key_type` (ed25519, or rsa of 3072 bits as ssh-keygen makes).
    """
    import paramiko

    host = fleet.hosts[0]
    folder = fleet.workdir / f"handshake-{key_type}"
    folder.mkdir(exist_ok=True)
    client_key, host_key = folder / "client", folder / "host"
    for key in (client_key, host_key):
        key.unlink(missing_ok=True)
        _run(["ssh-keygen", "-q", "-t", key_type, "-N", "", "-f", str(key)])
    # One more sshd on the first host, on a port of its own, with these keys.
    port = 2222 if key_type == "ed25519" else 2223
    config = folder / "sshd_config"
    config.write_text(SSHD_CONFIG.format(ip=host.ip).replace(f"{host.ip}:22", f"{host.ip}:{port}")
                      .replace("/run/tsops-bench/ssh_host_key", f"/run/tsops-bench/{key_type}")
                      .replace("/run/tsops-bench/authorized_keys",
                               f"/run/tsops-bench/{key_type}.pub"))
    assert host.process is not None
    leader = _pid1(host)
    setup = (f"cp {host_key} /proc/{leader}/root/run/tsops-bench/{key_type} && "
             f"cp {client_key}.pub /proc/{leader}/root/run/tsops-bench/{key_type}.pub && "
             f"cp {config} /proc/{leader}/root/run/tsops-bench/{key_type}.conf")
    _run(["sh", "-c", setup])
    sshd = subprocess.Popen(
        ["nsenter", "-t", str(leader), "-a", "-r", "-F", "/usr/sbin/sshd", "-D", "-e",
         "-f", f"/run/tsops-bench/{key_type}.conf"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert fleet.journal is not None
    fleet.journal.add_pid(sshd.pid)
    try:
        _wait_port(host.ip, port)
        public = Path(f"{host_key}.pub").read_text().split()
        server_key = paramiko.PKey.from_type_string(public[0], base64.b64decode(public[1]))
        pkey = paramiko.PKey.from_path(str(client_key))
        ticks = os.sysconf("SC_CLK_TCK")
        stat = Path(f"/proc/{sshd.pid}/stat")
        server_before = process_cpu_seconds(stat.read_text(), ticks)
        cpu_before, began = time.process_time(), time.monotonic()
        for _ in range(count):
            client = paramiko.SSHClient()
            client.get_host_keys().add(f"[{host.ip}]:{port}", public[0], server_key)
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            client.connect(host.ip, port, "root", pkey=pkey, look_for_keys=False,
                           allow_agent=False, timeout=15)
            _, stdout, _ = client.exec_command("true")
            stdout.channel.recv_exit_status()
            client.close()
        cpu = time.process_time() - cpu_before
        wall = time.monotonic() - began
        time.sleep(0.2)  # the last session's processes exit and are reaped
        server = process_cpu_seconds(stat.read_text(), ticks) - server_before
    finally:
        sshd.terminate()
        sshd.wait(10)
    return 1000 * cpu / count, 1000 * server / count, 1000 * wall / count


def _pid1(host: BenchHost) -> int:
    """The host's PID 1 (the sleeping stand-in), in this machine's PID numbering."""
    assert host.process is not None
    for pid in descendants(host.process.pid):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                return pid
    raise RuntimeError(f"{host.name}: no PID 1 found")


def _wait_port(ip: str, port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((ip, port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {ip}:{port}")


def _exit_on_sigterm() -> None:
    """SIGTERM becomes SystemExit and Ctrl-C KeyboardInterrupt (even when started from a shell
    that ignores it), so the fleet's `with` block cleans up."""
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)


def main() -> None:
    """Measure every size, then print the machine, the command and Markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=parse_sizes, default=[50, 100, 200],
                        help="host counts, comma separated (default 50,100,200)")
    parser.add_argument("--runs", type=int, default=3, help="runs per command and size")
    parser.add_argument("--concurrency", type=int, default=32, help="tsops --concurrency")
    parser.add_argument("--handshakes", type=int, default=0,
                        help="also price N bare paramiko connections per key type")
    parser.add_argument("--split-known-hosts", action="store_true",
                        help="one known_hosts file per host instead of one for the fleet")
    parser.add_argument("--compare", type=Path, metavar="CHECKOUT",
                        help="also run the tsops of this checkout, alternating, on the same hosts")
    args = parser.parse_args()
    _exit_on_sigterm()
    cores = os.cpu_count() or 1
    print(f"machine: {platform.node()}, {platform.machine()}, {cores} cores, kernel "
          f"{platform.release()}, Python {platform.python_version()}; "
          f"load average at start {os.getloadavg()[0]:.1f}; tsops --concurrency "
          f"{args.concurrency}; {args.runs} runs each, the median run shown", flush=True)
    results: dict[tuple[str, int], Measurement] = {}
    compared: dict[tuple[str, int], Measurement] = {}
    for size in args.hosts:
        began = time.monotonic()
        with Fleet(size, args.split_known_hosts) as fleet, control_plane() as control, \
                tempfile.TemporaryDirectory() as tmp:
            print(f"{size} hosts up in {time.monotonic() - began:.1f} s", file=sys.stderr,
                  flush=True)
            token = control.state.create_api_token()
            inventory = fleet.write_inventory(Path(tmp) / "inventory.yaml", control.url,
                                              control.tailnet)
            for command in COMMANDS:
                runs, others = [], []
                for _ in range(args.runs):
                    runs.append(run_tsops(command, inventory, token, args.concurrency, fleet,
                                          size))
                    print(f"  {command} {size}: {runs[-1]}", file=sys.stderr, flush=True)
                    if args.compare is not None:
                        others.append(run_tsops(command, inventory, token, args.concurrency,
                                                fleet, size, args.compare))
                        print(f"  {command} {size} ({args.compare}): {others[-1]}",
                              file=sys.stderr, flush=True)
                results[command, size] = median_run(runs)
                if others:
                    compared[command, size] = median_run(others)
            if args.handshakes and size == args.hosts[0]:
                for key_type in ("ed25519", "rsa"):
                    cpu, server, wall = handshake_cost(fleet, args.handshakes, key_type)
                    print(f"bare paramiko connect+auth+exec+close, {key_type} keys, per "
                          f"connection: {cpu:.1f} ms client CPU, {server:.1f} ms server CPU, "
                          f"{wall:.1f} ms wall", flush=True)
    print_tables(results, cores)
    if compared:
        print(f"\nThe same, with the tsops of {args.compare}:")
        print_tables(compared, cores)


def print_tables(results: dict[tuple[str, int], Measurement], cores: int) -> None:
    """One Markdown table per command, and the two targets."""
    for command in COMMANDS:
        rows = sorted((m for (c, _), m in results.items() if c == command), key=lambda m: m.hosts)
        if not rows:
            continue
        print(f"\n`tsops {command}`\n")
        print("| hosts | wall | tsops CPU | tsops CPU per host | peak RSS | hosts' CPU "
              "| control sim CPU | floor | wall / floor | shared floor | wall / shared floor "
              "| machine busy | load avg |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for m in rows:
            floor, shared = m.floor_s(cores), m.shared_floor_s(cores)
            print(f"| {m.hosts} | {m.wall_s:.1f} s | {m.tsops_cpu_s:.1f} s "
                  f"| {m.tsops_cpu_per_host_ms:.0f} ms | {m.max_rss_mib:.0f} MiB "
                  f"| {m.hosts_cpu_s:.1f} s | {m.control_cpu_s:.2f} s | {floor:.1f} s "
                  f"| {m.wall_s / floor:.2f} | {shared:.1f} s | {m.wall_s / shared:.2f} "
                  f"| {m.machine_cpu_s:.1f} s | {m.load:.1f} |")
        for before, after in itertools.pairwise(rows):
            print(f"\ntsops CPU per added host, {before.hosts} to {after.hosts} hosts: "
                  f"{marginal_ms(before, after):.0f} ms")
        per_host = {m.hosts: m.tsops_cpu_per_host_ms for m in rows}
        fleets = [size for size in per_host if size >= BASELINE_BELOW]
        if len(fleets) > 1:
            print(f"\ntsops CPU per host, {max(fleets)} hosts against {min(fleets)}: "
                  f"{flatness(per_host):+.0%} (target: within 20%)")


if __name__ == "__main__":
    main()
