#!/usr/bin/env bash
# Installs the system packages Socle needs on a Debian 12 host (run as root):
#   qemu-system-x86 + qemu-utils   the hypervisor and qemu-img (host agent)
#   openssh-client                 ssh-keygen, used by the keypair tests
#   python3-venv                   only if python3 cannot create a venv
#   softhsm2                       a real PKCS#11 token for socle-kms (HSM-held keys; tests)
#   opensc                         pkcs11-tool, the customer-side key tool the socle-kms tests use
#   syslinux syslinux-common       boot loader + MBR code written into the full-disk socle-tiny image
#   mtools dosfstools              mcopy / mkfs.vfat: build that image's FAT boot partition in a
#                                  plain file (no loop device, no mount)
#   iproute2 nftables dnsmasq-base the host network driver (socle-net): namespaces, bridges,
#                                  security groups/NAT, per-Net DHCP
#   busybox                        udhcpc, nc and wget play the guest in the socle-net tests
#   postgresql                     the state engine of multi-server clouds; the tests start a
#                                  throwaway cluster of it (no service is enabled or used)
#   cargo-nextest (crates.io)      runs the Rust tests, each in its own process, with a time bound
# The socle-tiny guest image is fetched at run time with `apt-get download`
# (nothing installed), so apt's package lists must exist: we refresh them.
#
# Some images ship a newer qemu-utils from bookworm-backports; Debian's
# qemu-system-x86 7.2 needs the matching qemu-utils 7.2, so both are pinned to
# the same version (a plain `apt-get install qemu-system-x86` fails with
# "held broken packages").
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

need=()
command -v qemu-system-x86_64 >/dev/null && command -v qemu-img >/dev/null || need+=(qemu)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
python3 -m venv --help >/dev/null 2>&1 || need+=(python3-venv)
[ -e /usr/lib/softhsm/libsofthsm2.so ] && command -v softhsm2-util >/dev/null || need+=(softhsm2)
command -v pkcs11-tool >/dev/null || need+=(opensc)
command -v syslinux >/dev/null || need+=(syslinux)
[ -e /usr/lib/syslinux/mbr/mbr.bin ] || need+=(syslinux-common)
command -v mcopy >/dev/null || need+=(mtools)
command -v mkfs.vfat >/dev/null || [ -x /usr/sbin/mkfs.vfat ] || [ -x /sbin/mkfs.vfat ] || need+=(dosfstools)
command -v ip >/dev/null || need+=(iproute2)
command -v nft >/dev/null || need+=(nftables)
command -v dnsmasq >/dev/null || need+=(dnsmasq-base)
command -v busybox >/dev/null || need+=(busybox)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
# apt-get download (image build) needs package lists.
[ -n "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v lock | grep -v partial)" ] || need+=(lists)

# The Rust tests run under cargo-nextest (bounded, one process per test).
if ! cargo nextest --version >/dev/null 2>&1; then
    echo "installing cargo-nextest (from crates.io)"
    cargo install --locked cargo-nextest
fi

if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "error: missing ${need[*]}; run this script as root (or: sudo $0)" >&2
    exit 1
fi
echo "installing: ${need[*]}"
apt-get update -qq
pkgs=()
for n in "${need[@]}"; do
    case "$n" in
        qemu)
            ver=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
            if [ -z "$ver" ] || [ "$ver" = "(none)" ]; then
                echo "error: no qemu-system-x86 package in the apt sources" >&2
                exit 1
            fi
            pkgs+=("qemu-system-x86=$ver" "qemu-utils=$ver")
            ;;
        lists) ;;
        *) pkgs+=("$n") ;;
    esac
done
if [[ " ${pkgs[*]} " == *" postgresql "* ]]; then
    # The tests start their own clusters: no system-wide one.
    mkdir -p /etc/postgresql-common
    grep -qs '^create_main_cluster' /etc/postgresql-common/createcluster.conf \
        || echo 'create_main_cluster = false' >> /etc/postgresql-common/createcluster.conf
fi
if [ ${#pkgs[@]} -gt 0 ]; then
    apt-get install -y -qq --no-install-recommends --allow-downgrades "${pkgs[@]}" >/dev/null
fi
command -v qemu-system-x86_64 >/dev/null && qemu-system-x86_64 --version | head -1
