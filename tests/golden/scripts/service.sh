set -eu
systemctl enable --now tailscaled
