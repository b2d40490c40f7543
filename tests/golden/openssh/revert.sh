#!/bin/sh
# tsops dead-man revert: restores OpenSSH as it was before an unconfirmed change.
set -u
mv /var/lib/tsops/openssh/0123456789ab.armed /var/lib/tsops/openssh/0123456789ab.reverting 2>/dev/null || exit 0
. /var/lib/tsops/openssh/0123456789ab.state
if [ -e /var/lib/tsops/openssh/0123456789ab.prev ]; then cp -p /var/lib/tsops/openssh/0123456789ab.prev /etc/ssh/sshd_config.d/tsops-openssh.conf; restored='put the previous tsops drop-in back'
else rm -f /etc/ssh/sshd_config.d/tsops-openssh.conf; restored='removed the tsops drop-in (there was none before)'; fi
[ "$socket_enabled" = enabled ] && systemctl enable --quiet ssh.socket
[ "$service_enabled" = enabled ] && systemctl enable --quiet ssh.service
[ "$socket_active" = active ] && systemctl start ssh.socket
if [ "$service_active" = active ]; then systemctl restart ssh.service; started='restarted ssh.service'; else started='left ssh.service stopped, as it was'; fi
echo "$restored, $started" > /var/lib/tsops/openssh/0123456789ab.reverted
rm -f /var/lib/tsops/openssh/0123456789ab.reverting
echo "tsops: OpenSSH change not confirmed: $restored" >&2
