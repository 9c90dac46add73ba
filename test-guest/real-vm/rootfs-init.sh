#!/bin/busybox sh
# /sbin/init of the real VM's root file system (test-guest/README.md, "The real VM").
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs -o size=16m tmpfs /tmp
echo "presync-guest: init (root $(awk '$2 == "/" {print $1}' /proc/mounts | tail -n1))"
ip=""; port=7; disk=on; diskms=20
for x in $(cat /proc/cmdline); do
  case "$x" in
    presync.ip=*) ip="${x#presync.ip=}" ;;
    presync.echo=*) port="${x#presync.echo=}" ;;
    presync.disk=*) disk="${x#presync.disk=}" ;;
    presync.diskms=*) diskms="${x#presync.diskms=}" ;;
  esac
done
ip link set lo up
if [ -n "$ip" ]; then
  ip link set eth0 up && ip addr add "$ip" dev eth0 && echo "presync-guest: eth0 $ip"
fi
/bin/guestd echo "$port" </dev/null >/dev/console 2>&1 &
if [ "$disk" != off ]; then
  /bin/guestd disk /var/lib/presync/records "$diskms" </dev/null >/dev/console 2>&1 &
fi
# The memory-continuity workload (presync.workload=..., presync.mem=...).
/bin/workload </dev/console >/dev/console 2>&1
echo "presync-guest: workload exited rc=$?"
# PID 1 must never exit: the kernel would panic.
while :; do sleep 3600; done
