#!/bin/busybox sh
# The real VM's initramfs (scripts/build-real-vm.sh): loads the virtio modules
# of the kernel package (the cloud kernel builds them as modules), mounts the
# ext4 root file system from root= (default /dev/vda) and switch_roots into it.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
root=/dev/vda
for x in $(cat /proc/cmdline); do
  case "$x" in root=*) root="${x#root=}" ;; esac
done
# In dependency order (the modules' own depends= fields; no depmod needed).
for m in $(cat /lib/modules/load-order); do
  insmod "/lib/modules/$m.ko" || echo "presync-initramfs: insmod $m failed"
done
i=0
while [ ! -b "$root" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
mkdir -p /newroot
if ! mount -t ext4 -o rw "$root" /newroot; then
  echo "presync-initramfs: cannot mount $root"
  while :; do sleep 3600; done
fi
mount --move /dev /newroot/dev
umount /sys /proc
exec switch_root /newroot /sbin/init
