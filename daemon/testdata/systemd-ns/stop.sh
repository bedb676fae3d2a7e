#!/bin/bash
# Shuts the namespaced systemd down and removes its cgroup.
# usage: stop.sh DIR CGROUP
N=$1 CG=$2
# systemd.hostpid also covers a systemd that never reached "running".
S=$(cat "$N/systemd.hostpid" 2>/dev/null)
if [ -n "$S" ] && [ "$(readlink /proc/$S/exe)" = /usr/lib/systemd/systemd ]; then
  nsenter -t "$S" -m -p -- systemctl exit 2>/dev/null || kill -TERM "$S"
  for i in $(seq 1 50); do [ -d "/proc/$S" ] || break; sleep 0.1; done
  [ -d "/proc/$S" ] && kill -KILL "$S"   # SIGKILL of the ns's PID 1 ends everything in it
fi
P=$(cat "$N/script.pid" 2>/dev/null); [ -n "$P" ] && [ -d "/proc/$P" ] && kill "$P"
sleep 0.3
find "$CG" -mindepth 1 -depth -type d -exec rmdir {} \; 2>/dev/null
rmdir "$CG" 2>/dev/null
exit 0
