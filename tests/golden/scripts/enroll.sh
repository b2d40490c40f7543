set -eu
umask 077
mkdir -p /run/tsops
f=$(mktemp /run/tsops/authkey.XXXXXX)
trap 'rm -f "$f"' EXIT
cat > "$f"
tailscale up --reset --force-reauth --auth-key="file:$f" --advertise-tags=tag:server,tag:db --ssh --hostname=db1 --accept-risk=lose-ssh --timeout=60s --login-server=https://ctl.example.com
