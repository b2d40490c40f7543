set -eu
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
cp "$stage/tailscale.tgz" "$d/t.tgz"
rm -f "$stage/tailscale.tgz"
if ! echo abababababababababababababababababababababababababababababababab'  '"$d/t.tgz" | sha256sum -c --quiet -; then
  echo 'the tarball does not match its sha256: nothing installed' >&2
  exit 3
fi
tar -xzf "$d/t.tgz" -C "$d"
install -m 0755 "$d/tailscale_1.78.3_amd64"/tailscale /usr/bin/tailscale
install -m 0755 "$d/tailscale_1.78.3_amd64"/tailscaled /usr/sbin/tailscaled
install -m 0644 "$d/tailscale_1.78.3_amd64"/systemd/tailscaled.service /etc/systemd/system/tailscaled.service
if [ ! -e /etc/default/tailscaled ]; then
  install -m 0644 "$d/tailscale_1.78.3_amd64"/systemd/tailscaled.defaults /etc/default/tailscaled
fi
systemctl daemon-reload
if systemctl -q is-active tailscaled; then systemctl restart tailscaled; fi
