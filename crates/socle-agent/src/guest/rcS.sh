#!/bin/sh
# socle-tiny stage 2 (busybox init sysinit action).
export PATH=/bin

# Kernel modules, in dependency order (computed by the image builder from each
# module's depends= field: virtio_ring comes before virtio, and so on).
while read -r m; do
    [ -n "$m" ] || continue
    insmod "/lib/modules/$m.ko" || echo "socle-guest: warning: cannot load module $m"
done < /etc/socle-modules

# Identity and user data passed by the host through QEMU fw_cfg (qemu_fw_cfg module).
fw=/sys/firmware/qemu_fw_cfg/by_name/opt/socle
if [ -r "$fw/vm-id/raw" ]; then
    echo "socle-guest: vm-id $(cat "$fw/vm-id/raw")"
fi
if [ -r "$fw/user-data/raw" ]; then
    cat "$fw/user-data/raw" > /run/socle/user-data
    echo "socle-guest: user-data $(wc -c < /run/socle/user-data) bytes"
fi

# ACPI power button: QEMU's system_powerdown raises the ACPI fixed power-button
# event; the kernel's ACPI button driver (button.ko) turns it into KEY_POWER on an
# input device, evdev exposes it as /dev/input/eventN, and busybox acpid maps
# KEY_POWER to /etc/acpi/PWRF/00000080, which asks init to power off.
# acpid only opens the event devices that exist when it starts, so wait for
# devtmpfs to show every one the kernel registered.
i=0
while [ $i -lt 100 ]; do
    want=$(ls /sys/class/input 2>/dev/null | grep -c '^event')
    have=$(ls /dev/input 2>/dev/null | grep -c '^event')
    [ "$want" -gt 0 ] && [ "$have" -ge "$want" ] && break
    usleep 20000; i=$((i + 1))
done
# acpid writes its pid file only after it has opened the event devices: once the
# file exists, a power-button press can no longer be missed.
acpid -c /etc/acpi -l /dev/console -p /run/acpid.pid
i=0
while [ ! -s /run/acpid.pid ] && [ $i -lt 250 ]; do usleep 20000; i=$((i + 1)); done
[ -s /run/acpid.pid ] || echo "socle-guest: warning: acpid did not start; ACPI power-off will not work"

# Block devices: "socle-guest: disk present|added|resized|removed vdX serial=…
# size=…" lines from now on (virtio-blk serial = volume id). The first scan is
# printed before "ready".
socle-disks watch &
i=0
while [ ! -e /run/socle/disks-scanned ] && [ $i -lt 250 ]; do usleep 20000; i=$((i + 1)); done

# Network: "socle-guest: nic added ethN" lines for the NICs present at boot
# come before "ready"; addresses (DHCP) and the metadata line come after.
ip link set lo up
socle-net watch &
i=0
while [ ! -e /run/socle/nics-scanned ] && [ $i -lt 250 ]; do usleep 20000; i=$((i + 1)); done

echo "socle-guest: ready"

[ -e /sys/class/net/eth0 ] && socle-net metadata &

# User data that is a script (first bytes "#!") runs once per boot, in the
# background, its output going to the console.
if [ -s /run/socle/user-data ] && [ "$(head -c 2 /run/socle/user-data)" = "#!" ]; then
    chmod 0755 /run/socle/user-data
    echo "socle-guest: user-data script started"
    (
        /run/socle/user-data < /dev/null > /dev/console 2>&1
        echo "socle-guest: user-data script exited with status $?"
    ) &
fi
