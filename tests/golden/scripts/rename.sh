set -eu
tailscale set --hostname=db1
