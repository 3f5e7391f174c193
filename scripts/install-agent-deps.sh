#!/bin/bash
# Installs what socle-agent needs on a Debian 12 host (root): QEMU 7.2 for x86
# guests and qemu-img. The socle-tiny guest image itself is fetched at run time
# with `apt-get download` (no install), so only apt's package lists are needed.
#
# Note: some images ship a newer qemu-utils from bookworm-backports; Debian's
# qemu-system-x86 7.2 needs the matching qemu-utils 7.2, so pin it explicitly
# (a plain `apt-get install qemu-system-x86` then fails with "held broken packages").
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if command -v qemu-system-x86_64 >/dev/null && command -v qemu-img >/dev/null; then
    echo "qemu already installed: $(qemu-system-x86_64 --version | head -1)"
    exit 0
fi
apt-get update -qq
ver=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
if [ -z "$ver" ] || [ "$ver" = "(none)" ]; then
    echo "error: no qemu-system-x86 package in the apt sources" >&2
    exit 1
fi
apt-get install -y -qq --no-install-recommends --allow-downgrades \
    "qemu-system-x86=$ver" "qemu-utils=$ver" >/dev/null
qemu-system-x86_64 --version | head -1
qemu-img --version | head -1
