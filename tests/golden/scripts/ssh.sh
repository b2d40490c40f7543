set -eu
tailscale set --ssh --accept-risk=lose-ssh
