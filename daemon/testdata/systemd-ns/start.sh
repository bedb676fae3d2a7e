#!/bin/bash
# Boots systemd as PID 1 in new namespaces; prints its host pid when it runs.
# usage: start.sh DIR CGROUP   (DIR holds units/, srv/, empty/)
set -u
N=$1 CG=$2
for u in exit.target final.target paths.target poweroff.target shutdown.target slices.target sockets.target \
         timers.target systemd-exit.service systemd-poweroff.service umount.target; do
  [ -e "$N/units/$u" ] || cp /usr/lib/systemd/system/$u "$N/units/$u"
done
printf '[Unit]\nDescription=System Initialization (test stub)\n' > "$N/units/sysinit.target"
printf '[Unit]\nDescription=Basic System (test stub)\nRequires=sysinit.target\nWants=sockets.target\nAfter=sysinit.target sockets.target\n' > "$N/units/basic.target"
printf '[Unit]\nDescription=test boot target\nRequires=basic.target\nAfter=basic.target\nAllowIsolate=yes\n' > "$N/units/test.target"
for u in network-online.target multi-user.target; do printf '[Unit]\nDescription=%s (test stub)\n' $u > "$N/units/$u"; done
mkdir -p "$N/empty" "$CG"
: > "$N/console.log"
# script runs its command with $SHELL, which CI may not set.
SHELL=/bin/bash setsid script -q -f -e -c "bash -c 'echo \$\$ > $CG/cgroup.procs; exec unshare --pid --fork --mount --uts --ipc --cgroup --propagation private $N/boot.sh $N'" "$N/console.log" < /dev/null > /dev/null 2>&1 &
echo $! > "$N/script.pid"
why="boot.sh did not start"
for i in $(seq 1 200); do
  S=$(cat "$N/systemd.hostpid" 2>/dev/null)
  if [ -n "$S" ] && [ "$(readlink /proc/$S/exe)" = /usr/lib/systemd/systemd ]; then
    st=$(nsenter -t "$S" -m -p -- systemctl is-system-running --wait 2>&1)
    case $st in
      running) echo "$S" > "$N/systemd.pid"; echo "$S"; exit 0 ;;
    esac
    why="systemctl is-system-running: $st"
  elif [ -n "$S" ]; then
    why="pid $S is $(readlink /proc/$S/exe), not systemd"
  fi
  sleep 0.1
done
echo "systemd did not boot ($why); console:" >&2; cat "$N/console.log" >&2; exit 1
