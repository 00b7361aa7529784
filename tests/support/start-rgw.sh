#!/usr/bin/env bash
# Start a one-node Ceph cluster on loopback (mon + memstore OSD + RGW) for the
# store contract suite, and write its endpoint and keys to $dir/env.
# Needs Debian's radosgw, ceph-mon and ceph-osd (.ci/run installs them); run as root.
# Usage: start-rgw.sh   (FACTORY_RGW_DIR, FACTORY_RGW_PORT override the defaults)
set -euo pipefail

dir="${FACTORY_RGW_DIR:-/tmp/factory-rgw}"
port="${FACTORY_RGW_PORT:-7480}"
if [[ -f "$dir/env" ]] && curl -fsS -o /dev/null "http://127.0.0.1:${port}/"; then
    echo "RGW already answers on port ${port}"
    exit 0
fi
start_cluster() {
    # Stop a previous cluster of ours (a full or stuck one ignores SIGTERM: wait, then SIGKILL).
    pattern="(ceph-mon|ceph-osd|radosgw) -c $dir/ceph.conf"
    pkill -f "$pattern" 2>/dev/null || true
    for _ in $(seq 20); do pgrep -f "$pattern" >/dev/null || break; sleep 0.5; done
    pkill -9 -f "$pattern" 2>/dev/null || true
    rm -rf "$dir"
    mkdir -p "$dir"/{mon,osd,run,log}
    fsid="$(python3 -c 'import uuid; print(uuid.uuid4())')"
    conf="$dir/ceph.conf"
    cat > "$conf" <<CONF
[global]
fsid = ${fsid}
mon host = v1:127.0.0.1:6789
mon initial members = a
public network = 127.0.0.0/8
# No cephx on loopback; with auth off, both client modes must allow crc or radosgw hangs.
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc secure
ms client mode = crc secure
ms bind msgr2 = false
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
osd objectstore = memstore
memstore device bytes = 8589934592
mon max pg per osd = 1000
osd pool default pg num = 8
osd pool default pgp num = 8
run dir = ${dir}/run
log file = ${dir}/log/\$name.log
admin socket = ${dir}/run/\$name.asok
pid file = ${dir}/run/\$name.pid
[mon.a]
mon data = ${dir}/mon
[osd.0]
osd data = ${dir}/osd
[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:${port}
rgw data = ${dir}/rgw
rgw dns name = 127.0.0.1
# Objects live in memory (memstore): reclaim deleted ones within seconds, not hours.
rgw gc obj min wait = 5
rgw gc processor period = 10
rgw gc processor max time = 10
CONF

    monmaptool --create --add a 127.0.0.1:6789 --fsid "$fsid" "$dir/monmap" >/dev/null
    ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" >/dev/null
    ceph-mon -c "$conf" -i a
    for _ in $(seq 60); do timeout 10 ceph -c "$conf" -s >/dev/null 2>&1 && break; sleep 0.5; done
    osd_id="$(ceph -c "$conf" osd create)"
    ceph-osd -c "$conf" -i "$osd_id" --mkfs >/dev/null 2>&1
    # An OSD's first start on a fresh monitor can lose a race: its first command reaches the
    # monitor with a zero fsid ('wrong fsid', EPERM) and the OSD exits. Started again on the
    # same data it comes up (seen on a fresh CI machine, twice), so start it until it is up.
    for _ in $(seq 5); do
        pgrep -f "ceph-osd -c $conf" >/dev/null || ceph-osd -c "$conf" -i "$osd_id" 2>>"$dir/log/start.log" || true
        up=""
        for _ in $(seq 20); do
            up="$(timeout 10 ceph -c "$conf" osd stat 2>/dev/null || true)"
            [[ "$up" == *"1 up"* ]] && break
            pgrep -f "ceph-osd -c $conf" >/dev/null || break
            sleep 0.5
        done
        [[ "$up" == *"1 up"* ]] && break
        echo "OSD not up yet (${up:-no answer}); starting it again" >&2
    done
    radosgw -c "$conf" -n client.rgw.a
    for _ in $(seq 120); do
        curl -fsS -o /dev/null "http://127.0.0.1:${port}/" 2>/dev/null && break
        sleep 0.5
    done
    curl -fsS -o /dev/null "http://127.0.0.1:${port}/" || return 1
}

# A first start on a machine that has just booted has been seen to fail (the OSD's
# first command to the monitor refused: 'wrong fsid'); a second, from scratch, worked.
if ! start_cluster; then
    echo "RGW did not answer; starting the cluster again from scratch" >&2
    start_cluster
fi

access="factory-test-access"
secret="factory-test-secret-$(python3 -c 'import secrets; print(secrets.token_hex(8))')"
radosgw-admin -c "$conf" user create --uid=factory --display-name=factory \
    --access-key="$access" --secret-key="$secret" >/dev/null
printf 'ENDPOINT=http://127.0.0.1:%s\nACCESS_KEY=%s\nSECRET_KEY=%s\n' "$port" "$access" "$secret" > "$dir/env"
echo "RGW answers on http://127.0.0.1:${port}"
