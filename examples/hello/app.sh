#!/bin/sh
# A tiny app instance: reports who and where it is and the limits it lives under, then serves
# one page on $PORT (busybox httpd) until stopped.
port=${PORT:-8080}
echo "hello from $(hostname): instance ${INSTANCE_INDEX:-?} (${INSTANCE_GUID:-no guid}), pid $$ in my own pid namespace"
echo "uid $(id -u), gid $(id -g), HOME $HOME"
for f in memory/memory.limit_in_bytes memory/memory.memsw.limit_in_bytes pids/pids.max cpu/cpu.shares \
         memory.max memory.swap.max pids.max cpu.weight; do
  [ -r "/sys/fs/cgroup/$f" ] && echo "limit $f = $(cat /sys/fs/cgroup/$f)"
done
echo "processes I can see: $(ls -d /proc/[0-9]* | wc -l)"
echo "disk: $(df -h "${HOME:-/tmp}" | tail -1)"
echo "serving on :$port (busybox httpd) until stopped"
www=/tmp/www
mkdir -p "$www"
echo "hello from instance ${INSTANCE_INDEX:-?} of ${VCAP_APPLICATION:+a staged app} ($(hostname))" >"$www/index.html"
exec httpd -f -p "$port" -h "$www"
