#!/bin/sh
# A tiny app instance: reports who and where it is, the limits it lives under, and what
# happens when it tries to take more than its share.
echo "hello from $(hostname), pid $$ in my own pid namespace"
echo "uid $(id -u), gid $(id -g)"
for f in memory/memory.limit_in_bytes memory/memory.memsw.limit_in_bytes pids/pids.max cpu/cpu.shares \
         memory.max memory.swap.max pids.max cpu.weight; do
  [ -r "/sys/fs/cgroup/$f" ] && echo "limit $f = $(cat /sys/fs/cgroup/$f)"
done
echo "processes I can see: $(ls -d /proc/[0-9]* | wc -l)"
echo "serving on :8080 (busybox httpd) until stopped"
mkdir -p /tmp/www && echo "hello from $(hostname)" > /tmp/www/index.html
exec httpd -f -p 8080 -h /tmp/www
