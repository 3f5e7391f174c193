#!/bin/busybox sh
# socle-tiny /init, stage 1 (runs as PID 1 straight from the initramfs).
# Mounts the pseudo file systems, announces the boot, then execs busybox init,
# which runs /etc/init.d/rcS (stage 2) and from then on owns power-off/reboot.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /dev/pts /run/socle /var/log
echo "socle-guest: booting"
exec /bin/init
