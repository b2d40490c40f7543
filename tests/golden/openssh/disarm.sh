set -u
if mv /var/lib/tsops/openssh/0123456789ab.armed /var/lib/tsops/openssh/0123456789ab.confirmed 2>/dev/null; then
  systemctl stop tsops-openssh-revert-0123456789ab.timer 2>/dev/null || true
  rm -f /var/lib/tsops/openssh/0123456789ab.*
  echo disarmed
  exit 0
fi
if [ -e /var/lib/tsops/openssh/0123456789ab.reverted ]; then cat /var/lib/tsops/openssh/0123456789ab.reverted; rm -f /var/lib/tsops/openssh/0123456789ab.*; else echo 'the dead-man revert is still running'; fi
exit 4
