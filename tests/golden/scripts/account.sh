set -eu
if ! getent passwd tsops-canary >/dev/null; then
  useradd --system --create-home --home-dir /var/lib/tsops-canary --shell /bin/sh --comment 'tsops canary, Tailscale SSH verifier' tsops-canary
fi
passwd -l tsops-canary >/dev/null
