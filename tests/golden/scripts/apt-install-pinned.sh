set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -q -o Dir::Etc::sourcelist=/etc/apt/sources.list.d/tailscale.list -o Dir::Etc::sourceparts=- -o APT::Get::List-Cleanup=0
apt-get install -y -q --allow-downgrades -o Dpkg::Options::=--force-confold tailscale=1.78.3
