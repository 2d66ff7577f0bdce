#!/usr/bin/env bash
# A throw-away Ceph RGW (a real S3 implementation) on 127.0.0.1 for the end-to-end tests:
# one monitor, one in-memory (memstore) OSD, no mgr, auth off inside Ceph, S3 signatures
# checked. Debian packages: radosgw ceph-mon ceph-osd ceph-common (scripts/setup.sh).
#
#   DIR=$(mktemp -d) RGW_PORT=7480 scripts/rgw.sh up    # about 13 s; prints nothing on success
#   DIR=...                        scripts/rgw.sh down  # stops exactly what `up` started in DIR
#
# Optional env: MON_PORT (default RGW_PORT+1), MEMSTORE_BYTES (default 1 GiB), ACCESS_KEY, SECRET_KEY,
# KMS_KEYS (the testing KMS backend's keys for SSE aws:kms: "id=<base64 of 32 bytes> ...").
set -euo pipefail
: "${DIR:?set DIR to an empty scratch directory}"
RGW_PORT=${RGW_PORT:-7480}
MON_PORT=${MON_PORT:-$((RGW_PORT + 1))}
# memstore keeps objects in RAM; past this cap writes hang instead of failing, so size it
# above what a test run stores.
MEMSTORE_BYTES=${MEMSTORE_BYTES:-1073741824}
ACCESS_KEY=${ACCESS_KEY:-TESTACCESSKEY0000000}
SECRET_KEY=${SECRET_KEY:-testsecretkey00000000000000000000000000}
KMS_KEYS=${KMS_KEYS:-testkey-1=$(head -c 32 /dev/urandom | base64)}
CONF=$DIR/ceph.conf

wait_for() {  # wait_for SECONDS what cmd...
  local t=$1 what=$2; shift 2
  for _ in $(seq "$t"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  echo "timeout waiting for $what; see $DIR/log" >&2; return 1
}

# kill -0 succeeds on zombies, which linger here until pid 1 reaps them.
alive() { ps -o stat= -p "$1" 2>/dev/null | grep -qv Z; }

up() {
  trap down EXIT      # a failure below stops whatever was already started
  mkdir -p "$DIR"/run "$DIR"/log "$DIR"/mon.a "$DIR"/osd0 "$DIR"/rgw
  local fsid; fsid=$(cat /proc/sys/kernel/random/uuid)
  cat >"$CONF" <<CONF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$MON_PORT
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
auth cluster required = none
auth service required = none
auth client required = none
# without these two radosgw blocks 300 s ("get_initial_auth_request returned -13")
ms mon client mode = crc
ms client mode = crc
run dir = $DIR/run
admin socket = $DIR/run/\$name.asok
pid file = $DIR/run/\$name.pid
log file = $DIR/log/\$name.log
# otherwise the monitor writes under /var/log/ceph
mon cluster log to file = false
mon data = $DIR/mon.\$id
osd data = $DIR/osd\$id
osd objectstore = memstore
memstore device bytes = $MEMSTORE_BYTES
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon warn on pool no redundancy = false
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT
rgw data = $DIR/rgw
# Deleted objects' space back within seconds, not hours: memstore is capped (benchmark rounds).
rgw gc obj min wait = 0
rgw gc processor period = 5
# Server-side encryption over plain http on loopback: SSE-C and SSE-KMS, the latter with
# the "testing" KMS backend (keys from this file; never for production).
rgw crypt require ssl = false
rgw crypt s3 kms backend = testing
rgw crypt s3 kms encryption keys = $KMS_KEYS
CONF
  monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$MON_PORT]" "$DIR/monmap" >/dev/null
  ceph-mon -c "$CONF" -i a --mkfs --monmap "$DIR/monmap"
  ceph-mon -c "$CONF" -i a                       # daemonizes; pid in run/mon.a.pid
  local id; id=$(ceph -c "$CONF" --connect-timeout 30 osd create)
  [ "$id" = 0 ]
  ceph-osd -c "$CONF" -i 0 --mkfs 2>>"$DIR/log/osd-mkfs.log"
  ceph-osd -c "$CONF" -i 0 2>>"$DIR/log/osd-start.log"   # daemonizes; pid in run/osd.0.pid
  wait_for 60 "osd.0 up" sh -c "ceph -c '$CONF' osd stat | grep -q ' 1 up'"
  # Foreground radosgw under a pid we know: its daemon mode forks without waiting and, if
  # the port is taken, exits and deletes its pid file.
  setsid radosgw -f -c "$CONF" -n client.rgw.a </dev/null >>"$DIR/log/radosgw.out" 2>&1 &
  local pid=$! i; echo "$pid" >"$DIR/run/radosgw.pid"
  for i in $(seq 120); do   # radosgw itself must answer, not just something on the port
    alive "$pid" || { echo "radosgw exited; see $DIR/log/client.rgw.a.log" >&2; exit 1; }
    if curl -sf "http://127.0.0.1:$RGW_PORT/" | grep -q ListAllMyBucketsResult; then break; fi
    if [ "$i" = 120 ]; then echo "timeout waiting for radosgw" >&2; exit 1; fi
    sleep 0.5
  done
  radosgw-admin -c "$CONF" user create --uid=test --display-name=test \
    --access-key="$ACCESS_KEY" --secret="$SECRET_KEY" >/dev/null
  trap - EXIT
}

down() {  # kill exactly the pids in our pid files, checking each process's name first
  local name pid f
  for name in radosgw:radosgw osd.0:ceph-osd mon.a:ceph-mon; do
    f=$DIR/run/${name%%:*}.pid
    [ -s "$f" ] || continue
    pid=$(cat "$f")
    if [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = "${name##*:}" ]; then
      kill "$pid"
      for _ in $(seq 30); do alive "$pid" || break; sleep 0.2; done
      if alive "$pid"; then kill -9 "$pid"; fi   # radosgw waits up to 120 s for requests in flight
    fi
    rm -f "$f"
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: DIR=... [RGW_PORT=...] $0 up|down" >&2; exit 2 ;;
esac
