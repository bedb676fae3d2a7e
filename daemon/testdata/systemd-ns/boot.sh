#!/bin/bash
# PID 1 of fresh pid/mount/uts/ipc/cgroup namespaces (started by start.sh),
# with a pty as stdio that becomes the container's console. Boots a real
# systemd on the units in $N/units, with $N/srv bound on /srv.
set -e
N=$1
T=$(tty)
# The host's pid of this process, which becomes systemd: /proc is still the
# host's here, so /proc/self names us as the host sees us. start.sh drives
# systemd through it (the process tree above us depends on $SHELL).
read -r hostpid _ < /proc/self/stat
echo "$hostpid" > "$N/systemd.hostpid"
mount --make-rprivate /
mount -t proc proc /proc
mount -t tmpfs -o mode=755 tmpfs /run
mount -o remount,bind,ro /sys
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount --bind "$N/srv" /srv
mount --bind "$T" /dev/console
# systemd skips this itself when container= is set; without it LoadCredential=
# silently delivers an empty credential (the ramfs does not propagate).
mount --make-rshared /
mkdir -p /run/systemd/system.conf.d
printf '[Manager]\nDefaultStandardOutput=tty\nDefaultStandardError=tty\n' > /run/systemd/system.conf.d/50-test.conf
# A journald started by a test keeps its journal in memory, never in the
# host's /var/log/journal.
mkdir -p /run/systemd/journald.conf.d
printf '[Journal]\nStorage=volatile\n' > /run/systemd/journald.conf.d/50-test.conf
export SYSTEMD_UNIT_PATH=$N/units
export SYSTEMD_GENERATOR_PATH=$N/empty SYSTEMD_ENVIRONMENT_GENERATOR_PATH=$N/empty
export container=tokend-test
exec /usr/lib/systemd/systemd --system --unit=test.target --log-target=console --log-level=info --show-status=no
