#!/bin/busybox sh
# The disk test guest's /init (scripts/build-disk-guest.sh): the test guest's
# init plus the virtio-blk modules (the cloud kernel builds them as modules)
# and a writer that keeps writing sequence-numbered blocks to /dev/vda.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
echo "presync-guest: init"
for m in $(cat /lib/modules/load-order); do
  insmod "/lib/modules/$m.ko" || echo "presync-guest: insmod $m failed"
done
/bin/disk-writer </dev/null >/dev/console 2>&1 &
/bin/workload </dev/console >/dev/console 2>&1
echo "presync-guest: workload exited rc=$?"
while :; do sleep 3600; done
