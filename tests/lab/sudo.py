"""Non-root SSH users with sudo on lab hosts, and sudo's I/O logging.

Real fleets reach their servers as an admin user with sudo, often with sudo's I/O logging on
(`Defaults log_input, log_output`: everything a sudo'd command reads and prints is kept). A
lab host is made that way from outside (nsenter), before tsops runs; the overlay of each host
keeps it to that host and that run.
"""

from __future__ import annotations

from typing import Literal

from tests.lab.lab import LabHost

IO_LOG_DIR = "/var/log/sudo-io"
# The password of a user whose sudo asks for one: nobody types it (tsops refuses such a user).
PASSWORD_USER_SECRET = "lab-sudo-password"


def add_sudo_user(host: LabHost, name: str,
                  sudo: Literal["nopasswd", "password"] = "nopasswd") -> None:
    """An account `name` that accepts the lab's client key over SSH, with sudo for everything:
    without a password (`nopasswd`), or only after typing its password (`password`)."""
    public_key = host.lab.client_key.with_suffix(".pub").read_text()
    rule = "NOPASSWD: ALL" if sudo == "nopasswd" else "ALL"
    host.nsenter(
        f"useradd --create-home --shell /bin/sh {name}\n"
        f"echo '{name}:{PASSWORD_USER_SECRET}' | chpasswd\n"
        f"install -d -m 0700 -o {name} -g {name} /home/{name}/.ssh\n"
        f"install -m 0600 -o {name} -g {name} /dev/stdin /home/{name}/.ssh/authorized_keys\n"
        f"echo '{name} ALL=(ALL:ALL) {rule}' > /etc/sudoers.d/lab-{name}\n"
        f"chmod 0440 /etc/sudoers.d/lab-{name}\n"
        f"visudo -cq -f /etc/sudoers.d/lab-{name}\n",
        input=public_key)


def enable_sudo_io_log(host: LabHost) -> None:
    """sudo keeps every sudo'd command's input and output under IO_LOG_DIR (as compliance
    fleets configure it), whether or not a terminal is attached."""
    host.nsenter(
        f"printf 'Defaults log_input, log_output\\nDefaults iolog_dir={IO_LOG_DIR}\\n' "
        "> /etc/sudoers.d/lab-iolog\n"
        "chmod 0440 /etc/sudoers.d/lab-iolog\n"
        "visudo -cq -f /etc/sudoers.d/lab-iolog\n")


def sudo_io_logs(host: LabHost) -> str:
    """Everything sudo's I/O logs on the host hold (its stdin, stdout, stderr and tty logs,
    decompressed), as text: what an auditor, or an attacker with the logs, can read."""
    return host.nsenter(
        f"find {IO_LOG_DIR} -type f \\( -name stdin -o -name stdout -o -name stderr "
        "-o -name ttyin -o -name ttyout -o -name log \\) | while read -r f; do "
        'if gzip -t "$f" 2>/dev/null; then gzip -dc "$f"; else cat "$f"; fi; done',
    ).stdout


def sudo_io_sessions(host: LabHost) -> int:
    """How many sudo sessions the I/O log holds (each has a `log` file)."""
    out = host.nsenter(f"find {IO_LOG_DIR} -type f -name log 2>/dev/null | wc -l").stdout
    return int(out.strip() or 0)
