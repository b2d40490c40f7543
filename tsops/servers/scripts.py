"""The shell scripts tsops runs on hosts: pure renderers from typed inputs, golden-tested.

Each script is sent as one `sh -c` command (one round trip). Secrets never appear in a script,
nor on sudo's standard input: the enrollment key is staged by the SSH user as a 0600 file in a
private directory (`tsops.remote.Stage`, named by `$stage` in the script), which the script
reads and removes; the directory goes when the script ends, succeeded or failed.
"""

from __future__ import annotations

from shlex import quote

from tsops.inventory.model import Install
from tsops.servers.facts import HostFacts
from tsops.servers.plan import APT_KEYRING, APT_SOURCE, Desired, apt_source_line, tarball_version

STRICT = "set -eu\n"


def configure_apt_repo(install: Install, facts: HostFacts) -> str:
    """Fetch the repository's signing key and write the `signed-by` sources list."""
    keyring_url = f"{install.repository}/{facts.os_id}/{facts.codename}.noarmor.gpg"
    line = apt_source_line(install.repository, facts)
    return STRICT + (
        "umask 022\n"
        "tmp=$(mktemp)\n"
        "trap 'rm -f \"$tmp\"' EXIT\n"
        f"curl -fsSL --retry 2 -o \"$tmp\" {quote(keyring_url)}\n"
        f"install -m 0644 \"$tmp\" {APT_KEYRING}\n"
        f"printf '%s\\n' {quote(line)} > {APT_SOURCE}.tsops-new\n"
        f"mv {APT_SOURCE}.tsops-new {APT_SOURCE}\n"
    )


def install_package(install: Install, facts: HostFacts) -> str:
    """Install (or change to) the wanted version with the host's package manager."""
    if install.method == "apt":
        package = f"tailscale={install.version}" if install.version else "tailscale"
        return STRICT + (
            "export DEBIAN_FRONTEND=noninteractive\n"
            # Refresh only Tailscale's list: other sources may be unreachable from this host.
            f"apt-get update -q -o Dir::Etc::sourcelist={APT_SOURCE} "
            "-o Dir::Etc::sourceparts=- -o APT::Get::List-Cleanup=0\n"
            "apt-get install -y -q --allow-downgrades -o Dpkg::Options::=--force-confold "
            f"{quote(package)}\n"
        )
    if install.method == "rhel":
        path = "fedora" if facts.os_id == "fedora" else f"rhel/{facts.os_version.split('.')[0]}"
        package = f"tailscale-{install.version}" if install.version else "tailscale"
        return STRICT + (
            f"curl -fsSL --retry 2 -o /etc/yum.repos.d/tailscale.repo "
            f"{quote(f'{install.repository}/{path}/tailscale.repo')}\n"
            "if command -v dnf >/dev/null 2>&1; then pm=dnf; else pm=yum; fi\n"
            f"$pm install -y {quote(package)}\n"
        )
    raise ValueError(f"install_package does not handle method {install.method!r}")


STAGED_TARBALL = "tailscale.tgz"  # a local tarball's name in the step's staging directory
STAGED_AUTHKEY = "authkey"  # the enrollment key's name there


def install_tarball(install: Install, facts: HostFacts, uploaded: bool) -> str:
    """Verify a static tarball against its sha256, then install its binaries and unit.

    `uploaded`: tsops staged a local tarball as `$stage/tailscale.tgz` (the staging directory
    of `tsops.remote.Stage`); otherwise the host downloads the tarball's URL. Nothing is
    installed unless the digest matches.
    """
    assert install.tarball is not None
    version = tarball_version(install)
    fetch = (
        f"cp \"$stage/{STAGED_TARBALL}\" \"$d/t.tgz\"\nrm -f \"$stage/{STAGED_TARBALL}\"\n"
        if uploaded
        else f"curl -fsSL --retry 2 -o \"$d/t.tgz\" {quote(install.tarball.url or '')}\n"
    )
    source = f"\"$d/tailscale_{version}_{facts.arch}\""
    return STRICT + (
        "d=$(mktemp -d)\n"
        "trap 'rm -rf \"$d\"' EXIT\n"
        + fetch +
        f"if ! echo {quote(install.tarball.sha256)}'  '\"$d/t.tgz\" "
        "| sha256sum -c --quiet -; then\n"
        "  echo 'the tarball does not match its sha256: nothing installed' >&2\n"
        "  exit 3\n"
        "fi\n"
        "tar -xzf \"$d/t.tgz\" -C \"$d\"\n"
        f"install -m 0755 {source}/tailscale /usr/bin/tailscale\n"
        f"install -m 0755 {source}/tailscaled /usr/sbin/tailscaled\n"
        f"install -m 0644 {source}/systemd/tailscaled.service "
        "/etc/systemd/system/tailscaled.service\n"
        "if [ ! -e /etc/default/tailscaled ]; then\n"
        f"  install -m 0644 {source}/systemd/tailscaled.defaults /etc/default/tailscaled\n"
        "fi\n"
        "systemctl daemon-reload\n"
        "if systemctl -q is-active tailscaled; then systemctl restart tailscaled; fi\n"
    )


def enable_service() -> str:
    """Enable tailscaled at boot and start it now."""
    return STRICT + "systemctl enable --now tailscaled\n"


def enroll(desired: Desired) -> str:
    """`tailscale up` with the auth key from the staged 0600 file `$stage/authkey`, removed
    as soon as `tailscale up` has read it (and with the directory, whatever happens).

    `--reset` with every flag restated makes the result independent of earlier settings.
    `--force-reauth` because `tailscale up` uses an auth key only when the node has no node key
    yet, and refuses to move a running node to another login server without it: with it, the
    node always logs in with this key (its tags) at the inventory's login server.
    `--accept-risk=lose-ssh` because tsops may itself be connected over Tailscale.
    """
    flags = [
        "--reset", "--force-reauth", f"--auth-key=\"file:$stage/{STAGED_AUTHKEY}\"",
        f"--advertise-tags={quote(','.join(desired.tags))}", "--ssh",
        f"--hostname={quote(desired.hostname)}", "--accept-risk=lose-ssh", "--timeout=60s",
    ]
    if desired.login_server:
        flags.append(f"--login-server={quote(desired.login_server)}")
    return STRICT + (
        "umask 077\n"
        f"trap 'rm -f \"$stage/{STAGED_AUTHKEY}\"' EXIT\n"
        f"tailscale up {' '.join(flags)}\n"
    )


def enable_ssh() -> str:
    """Turn Tailscale SSH on without re-authenticating."""
    return STRICT + "tailscale set --ssh --accept-risk=lose-ssh\n"


def rename(hostname: str) -> str:
    """Change the node's Tailscale hostname."""
    return STRICT + f"tailscale set --hostname={quote(hostname)}\n"


def create_account(name: str) -> str:
    """The canary account: a system account with a shell and a home, and no usable password.

    Nothing but a Tailscale SSH rule lets anyone log in as it (Tailscale SSH authenticates by
    tailnet identity, not by the account's password, which stays locked).
    """
    account = quote(name)
    return STRICT + (
        f"if ! getent passwd {account} >/dev/null; then\n"
        f"  useradd --system --create-home --home-dir /var/lib/{account} --shell /bin/sh "
        f"--comment 'tsops canary, Tailscale SSH verifier' {account}\n"
        "fi\n"
        f"passwd -l {account} >/dev/null\n"
    )
