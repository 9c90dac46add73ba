#!/bin/busybox sh
# Writes record n (text "presync-disk seq=N", zero-padded to 4 KiB) to block
# 1 + n % 64 of /dev/vda with fsync, then drops the page cache and reads back
# records n-1 and n from the device: after a migration the first read on the
# target reads what the source wrote, from the target's disk. Prints
# "DISK n" every 10 records, "DISK BAD ..." on any mismatch.
i=0
while [ ! -b /dev/vda ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
if [ ! -b /dev/vda ]; then echo "DISK BAD no /dev/vda"; exit 1; fi
rec() { printf 'presync-disk seq=%08d' "$1"; }
check() {
  got="$(dd if=/dev/vda bs=4096 skip=$((1 + $1 % 64)) count=1 2>/dev/null | head -c 25)"
  [ "$got" = "$(rec "$1")" ] || echo "DISK BAD $1 got=$got"
}
n=0
echo "DISK start"
while :; do
  n=$((n + 1))
  rec "$n" | dd of=/dev/vda bs=4096 seek=$((1 + n % 64)) conv=sync,fsync 2>/dev/null || echo "DISK BAD write $n"
  echo 1 >/proc/sys/vm/drop_caches
  [ "$n" -gt 1 ] && check $((n - 1))
  check "$n"
  [ $((n % 10)) -eq 0 ] && echo "DISK $n"
done
