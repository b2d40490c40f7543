#!/usr/bin/env bash
# Build the Debian bookworm root filesystem that every lab host boots from.
# Usage: build-rootfs.sh DEST MIRROR
# Writes into DEST.partial and renames it to DEST only when everything succeeded,
# so an interrupted build is never mistaken for a finished one.
set -euo pipefail
dest=$1
mirror=$2
work="$dest.partial"
rm -rf "$work"
mkdir -p "$work"

debootstrap --variant=minbase bookworm "$work" "$mirror"

# Packages a lab host needs: systemd as PID 1, sshd, networking tools, and python3 for the
# simulators that later run inside hosts (paramiko and h2 for the simulated tailscaled's
# Tailscale SSH server and its recording uploads). Nothing more, so hosts look like a minimal
# server.
cat > "$work/usr/sbin/policy-rc.d" <<'POL'
#!/bin/sh
exit 101
POL
chmod +x "$work/usr/sbin/policy-rc.d"
for fs in proc sys dev; do mount --bind "/$fs" "$work/$fs"; done
trap 'for fs in dev sys proc; do umount -l "$work/$fs" 2>/dev/null || true; done' EXIT
chroot "$work" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
  systemd systemd-sysv dbus openssh-server iproute2 iputils-ping procps python3 sudo \
  ca-certificates curl gnupg python3-paramiko python3-h2
chroot "$work" apt-get clean
for fs in dev sys proc; do umount -l "$work/$fs"; done
trap - EXIT
rm -f "$work/usr/sbin/policy-rc.d"

# The container's hostname comes from --hostname; /etc/hostname would override it.
rm -f "$work/etc/hostname"
# Each host gets its own host key at boot time (bind-mounted); none is baked into the image.
rm -f "$work"/etc/ssh/ssh_host_*
cat > "$work/etc/ssh/sshd_config.d/lab.conf" <<'SSHD'
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
PermitRootLogin prohibit-password
UseDNS no
SSHD
# Hosts reach only the lab network: no Debian mirror inside, apt sources come from tests.
: > "$work/etc/apt/sources.list"
rm -f "$work"/etc/apt/sources.list.d/*
# Lab hosts never need a login prompt on the console or time sync with the outside.
chroot "$work" systemctl mask console-getty.service getty@tty1.service systemd-timesyncd.service \
  systemd-networkd-wait-online.service >/dev/null 2>&1 || true
chroot "$work" systemctl enable ssh.service >/dev/null
echo "tsops-lab" > "$work/etc/tsops-lab-release"
mv "$work" "$dest"
