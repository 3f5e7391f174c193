#!/bin/sh
# socle-disks: block devices of the socle-tiny guest (busybox ash, no forks in
# the polling loop).
#   socle-disks watch             one console line per disk present at boot
#                                 ("disk present"), then per disk added, resized
#                                 or removed; polls /sys/block every 0.3 s
#   socle-disks wait SERIAL [S]   prints /dev/vdX of the disk whose virtio serial
#                                 (the volume id) is SERIAL; waits up to S seconds
#                                 (default 60); status 1 on timeout
#   socle-disks iops DEV [N]      IOPS probe: sequential 4 KiB O_DIRECT reads from
#                                 the start of DEV at queue depth 1 (one busybox dd
#                                 per batch): batches of N (default 200), 4N, 16N…
#                                 until one lasts >= 0.5 s; prints
#                                 "iops=I reads=N centisecs=T" for that batch
export PATH=/bin

is_disk() {
    case "$1" in loop*|ram*|zram*|sr*|fd*|dm-*|md*) return 1 ;; esac
    return 0
}

# Sets $serial and $size for /sys/block/$1.
disk_info() {
    serial=""
    sectors=0
    [ -r "/sys/block/$1/serial" ] && read -r serial < "/sys/block/$1/serial" 2>/dev/null
    read -r sectors < "/sys/block/$1/size" 2>/dev/null
    size=$((sectors * 512))
}

# $known holds " dev=size=serial" entries.
drop_entry() {
    case "$known" in
        *" $1="*)
            before=${known%%" $1="*}
            after=${known#*" $1="}
            case "$after" in
                *" "*) after=" ${after#* }" ;;
                *) after="" ;;
            esac
            known="$before$after"
            ;;
    esac
}

watch() {
    known=""
    verb="present"
    while :; do
        seen=" "
        for p in /sys/block/*; do
            d=${p##*/}
            [ -e "$p/size" ] || continue
            is_disk "$d" || continue
            seen="$seen$d "
            case "$known" in
                *" $d="*)
                    rest=${known#*" $d="}
                    osize=${rest%%=*}
                    rest=${rest#*=}
                    oserial=${rest%% *}
                    sectors=0
                    read -r sectors < "$p/size" 2>/dev/null
                    nsize=$((sectors * 512))
                    if [ "$nsize" != "$osize" ]; then
                        echo "socle-guest: disk resized $d serial=$oserial size=$nsize"
                        drop_entry "$d"
                        known="$known $d=$nsize=$oserial"
                    fi
                    ;;
                *)
                    disk_info "$d"
                    echo "socle-guest: disk $verb $d serial=$serial size=$size"
                    known="$known $d=$size=$serial"
                    ;;
            esac
        done
        for e in $known; do
            d=${e%%=*}
            case "$seen" in
                *" $d "*) ;;
                *)
                    s=${e##*=}
                    echo "socle-guest: disk removed $d serial=$s"
                    drop_entry "$d"
                    ;;
            esac
        done
        if [ "$verb" = present ]; then
            verb="added"
            : > /run/socle/disks-scanned
        fi
        usleep 300000
    done
}

wait_serial() {
    want=$1
    secs=${2:-60}
    i=0
    while [ "$i" -lt $((secs * 10)) ]; do
        for p in /sys/block/*; do
            [ -r "$p/serial" ] || continue
            s=""
            read -r s < "$p/serial" 2>/dev/null
            if [ "$s" = "$want" ] && [ -b "/dev/${p##*/}" ]; then
                echo "/dev/${p##*/}"
                return 0
            fi
        done
        usleep 100000
        i=$((i + 1))
    done
    echo "socle-disks: no disk with serial $want after ${secs} s" >&2
    return 1
}

# /proc/uptime in centiseconds.
now_cs() {
    read -r up _ < /proc/uptime
    whole=${up%.*}
    frac=${up#*.}
    frac=${frac#0}
    cs=$((whole * 100 + frac))
}

iops() {
    dev=$1
    n=${2:-200}
    # Never read past the end of the device.
    sectors=0
    read -r sectors < "/sys/block/${dev##*/}/size" 2>/dev/null
    max=$((sectors / 8))
    [ "$n" -le "$max" ] || n=$max
    [ "$n" -gt 0 ] || return 1
    # Batches of n, 4n, 16n, ... until one lasts at least 0.5 s (the clock
    # ticks in centiseconds); the last batch is the figure.
    while :; do
        now_cs
        t0=$cs
        dd if="$dev" of=/dev/null bs=4096 count="$n" iflag=direct 2>/dev/null || return 1
        now_cs
        t=$((cs - t0))
        [ "$t" -gt 0 ] || t=1
        [ "$t" -ge 50 ] && break
        [ $((n * 4)) -le "$max" ] || break
        n=$((n * 4))
    done
    echo "iops=$((n * 100 / t)) reads=$n centisecs=$t"
}

case "$1" in
    watch) watch ;;
    wait) wait_serial "$2" "$3" ;;
    iops) iops "$2" "$3" ;;
    *)
        echo "usage: socle-disks watch | wait SERIAL [SECONDS] | iops DEVICE [COUNT]" >&2
        exit 2
        ;;
esac
