#!/bin/sh
# busybox acpid handler for the ACPI power button (event "button/power PWRF").
echo "socle-guest: ACPI power button pressed, powering off"
exec /bin/poweroff
