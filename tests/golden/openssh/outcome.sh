set -u
if [ -e /var/lib/tsops/openssh/0123456789ab.reverted ]; then cat /var/lib/tsops/openssh/0123456789ab.reverted; rm -f /var/lib/tsops/openssh/0123456789ab.*; exit 4; fi
if [ -e /var/lib/tsops/openssh/0123456789ab.armed ]; then echo armed; exit 0; fi
if [ -e /var/lib/tsops/openssh/0123456789ab.reverting ]; then echo 'the dead-man revert is still running'; exit 4; fi
rm -f /var/lib/tsops/openssh/0123456789ab.*
echo 'no change was armed: nothing was changed'
exit 3
