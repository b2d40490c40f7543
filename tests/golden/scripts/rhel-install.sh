set -eu
curl -fsSL --retry 2 -o /etc/yum.repos.d/tailscale.repo https://pkgs.tailscale.com/stable/rhel/9/tailscale.repo
if command -v dnf >/dev/null 2>&1; then pm=dnf; else pm=yum; fi
$pm install -y tailscale-1.78.3
