/**
 * Examples for the commands whose own --help does not print them; the CLI
 * appends them (and the exit statuses) to that help.
 */
export const EXAMPLES: Readonly<Record<string, readonly string[]>> = {
  qemu: [
    'presync qemu serve --listen 0.0.0.0:7070 --image /dev/shm/vm.ram --secret-file secret --qemu-listen 0.0.0.0:7071 --kernel vmlinuz --memory 1G',
    'presync qemu migrate --qmp /run/vm.qmp --to target:7070 --qemu-uri tcp:target:7071 --secret-file secret --launch-after 30s',
  ],
  'qemu serve': [
    '# your own command line (the source VM\'s devices); presync adds -incoming defer, -S and its QMP socket\n  presync qemu serve --listen 0.0.0.0:7070 --secret-file secret --qemu-listen 0.0.0.0:7071 -- \\\n    qemu-system-x86_64 -machine q35,memory-backend=ram0 -m 1G -object memory-backend-file,id=ram0,size=1G,mem-path=/dev/shm/vm.ram,share=on \\\n    -drive file=/srv/vm.qcow2,if=virtio -netdev tap,id=n0,ifname=tap0,script=no -device virtio-net-pci,netdev=n0 -display none',
    '# a QEMU your launcher started with -incoming defer -S and a second -qmp for presync\n  presync qemu serve --listen 0.0.0.0:7070 --secret-file secret --qemu-listen 0.0.0.0:7071 --image /dev/shm/vm.ram --attach-qmp /run/vm-presync.qmp',
    'presync qemu serve --listen 0.0.0.0:7070 --image /dev/shm/vm.ram --secret-file secret --qemu-listen 0.0.0.0:7071 \\\n    --kernel vmlinuz --initrd initrd.img --memory 1G --metrics 0.0.0.0:9464',
  ],
  'qemu migrate': [
    'presync qemu migrate --qmp /run/vm.qmp --to target:7070 --qemu-uri tcp:target:7071 --secret-file secret --launch-after 30s',
    'presync qemu migrate --qmp /run/vm.qmp --to target:7070 --qemu-uri tcp:target:7071 --secret-file secret \\\n    --control /run/presync.sock --metrics 127.0.0.1:9464 --json &\n  presync launch --control /run/presync.sock --when-ready',
    '# disks not on shared storage: mirrored into the target\'s NBD exports (qemu serve --nbd-listen 0.0.0.0:7072) from the start\n  presync qemu migrate --qmp /run/vm.qmp --to target:7070 --qemu-uri tcp:target:7071 --secret-file secret \\\n    --copy-storage all --nbd target:7072 --verify-disk --launch-when-ready',
  ],
  report: ['presync bench paper --quick -o paper.json && presync report paper.json -o report.html', 'presync report run1.json run2.json -o report.html --png charts/'],
  trace: ['presync trace record --image /dev/shm/app.img --epoch 100ms --duration 60s -o t.jsonl.gz', 'presync trace replay t.jsonl.gz --policy presync,presync-naive -o r.json'],
  'trace record': ['presync trace record --image /dev/shm/app.img --epoch 100ms --duration 60s -o t.jsonl.gz', 'presync trace record --qmp /run/vm.qmp --duration 2m -o vm.jsonl.gz'],
  'trace replay': ['presync trace replay t.jsonl.gz --policy presync,presync-naive --launch-after 20s -o r.json', 'presync trace replay t.jsonl.gz --bandwidth 100mbit --rtt 5ms --json'],
  faults: ['presync faults', 'presync faults --only cut-presync,kill-target --json', 'presync faults --list'],
  'bench perf': ['presync bench perf --quick', 'presync bench perf --sizes 256M,1G --no-qemu --json'],
  'bench qemu': ['presync bench qemu --reps 3', 'presync bench qemu --workloads text,movie --reps 1 -o qemu.json'],
  'bench throughput': ['presync bench throughput', 'presync bench throughput --mib 256 --json -o throughput.json'],
};

export function examplesFor(key: string): string {
  const ex = EXAMPLES[key];
  return ex ? `\nExamples:\n${ex.map((e) => `  ${e}`).join('\n')}\n` : '';
}
