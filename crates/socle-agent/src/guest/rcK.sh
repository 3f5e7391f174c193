#!/bin/sh
# socle-tiny shutdown action (busybox init runs it before killing every process
# and calling reboot(2), for both "poweroff" and "reboot").
export PATH=/bin
echo "socle-guest: shutting down"
sync
