set -eu
umask 077
trap 'rm -f "$stage/authkey"' EXIT
tailscale up --reset --force-reauth --auth-key="file:$stage/authkey" --advertise-tags=tag:server,tag:db --ssh --hostname=db1 --accept-risk=lose-ssh --timeout=60s --login-server=https://ctl.example.com
