#!/bin/sh
# socle-net: the network of the socle-tiny guest (busybox ash).
#   socle-net watch      configures every ethN by DHCP (one udhcpc each, retrying
#                        for ever), now and whenever a NIC is hot-plugged; prints
#                        "socle-guest: nic added|removed ethN mac=…" and, from the
#                        DHCP script, "socle-guest: net ethN ADDR/LEN gw GW"
#   socle-net metadata   once eth0 has an address, prints
#                        "socle-guest: metadata instance-id ID" read from the
#                        metadata service (retries for 60 s)
#   socle-net fetch PATH prints http://169.254.169.254/PATH (status 1 on failure)
# udhcpc calls this script as its event handler ($1 = deconfig|bound|renew|…).
export PATH=/bin
MD=http://169.254.169.254

dhcp_event() {
    case "$1" in
        deconfig)
            ip addr flush dev "$interface"
            ip link set "$interface" up
            ;;
        bound|renew)
            ip addr flush dev "$interface"
            ip addr add "$ip/$mask" dev "$interface"
            # Only the first NIC carries the default route.
            if [ "$interface" = eth0 ] && [ -n "$router" ]; then
                ip route replace default via "${router%% *}" dev "$interface"
            fi
            echo "$ip" > "/run/socle/ip-$interface"
            # udhcpc's own output is discarded: write to the console.
            echo "socle-guest: net $interface $ip/$mask gw ${router%% *}" > /dev/console
            ;;
        leasefail|nak)
            ;;
    esac
}

watch() {
    known=" "
    while :; do
        seen=" "
        for p in /sys/class/net/eth*; do
            [ -e "$p" ] || continue
            i=${p##*/}
            seen="$seen$i "
            case "$known" in *" $i "*) continue ;; esac
            read -r mac < "$p/address"
            echo "socle-guest: nic added $i mac=$mac"
            ip link set "$i" up
            # Foreground mode in a background job: udhcpc keeps the lease
            # renewed and retries discovery every second until it gets one.
            udhcpc -f -i "$i" -s /bin/socle-net -T 1 -t 3 -A 1 > /dev/null 2>&1 &
            echo $! > "/run/socle/udhcpc-$i.pid"
        done
        for i in $known; do
            case "$seen" in *" $i "*) continue ;; esac
            echo "socle-guest: nic removed $i"
            [ -s "/run/socle/udhcpc-$i.pid" ] && kill "$(cat "/run/socle/udhcpc-$i.pid")" 2>/dev/null
            rm -f "/run/socle/udhcpc-$i.pid" "/run/socle/ip-$i"
        done
        known=$seen
        touch /run/socle/nics-scanned
        sleep 1
    done
}

fetch() {
    # No -T: busybox wget's timeout option is unreliable here; the service
    # answers at once or the connection is refused.
    wget -q -O - "$MD/$1"
}

metadata() {
    i=0
    while [ ! -s /run/socle/ip-eth0 ] && [ $i -lt 600 ]; do usleep 100000; i=$((i + 1)); done
    [ -s /run/socle/ip-eth0 ] || { echo "socle-guest: metadata: eth0 got no address"; return 1; }
    i=0
    while [ $i -lt 60 ]; do
        id=$(fetch latest/meta-data/instance-id 2>/dev/null) && [ -n "$id" ] && {
            echo "socle-guest: metadata instance-id $id"
            return 0
        }
        sleep 1; i=$((i + 1))
    done
    echo "socle-guest: metadata service unreachable"
    return 1
}

case "$1" in
    watch) watch ;;
    metadata) metadata ;;
    fetch) fetch "$2" ;;
    deconfig|bound|renew|leasefail|nak) dhcp_event "$1" ;;
    *) echo "usage: socle-net watch|metadata|fetch PATH" >&2; exit 2 ;;
esac
