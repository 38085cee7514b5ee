#!/bin/bash
# Captures real traffic for the fuzz corpora (issue 8): a 3-node lab
# (`cargo xtask lab up`, prefix tl), tcpdump on the lab bridge, then real
# clients: busybox udhcpc, dhclient, perfdhcp (relayed), tftp-hpa, atftp and
# curl (tftp://, with blksize/tsize/windowsize options). Writes OUT/lab.pcap
# and the service and node config files; `extract.py` turns the pcap into
# fuzz/corpus/<target>/. Run as root, under the heavy lock:
#   flock /tmp/heavy.lock fuzz/seed/capture.sh /tmp/tandem-capture
set -euo pipefail
OUT=${1:?usage: capture.sh OUTDIR}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
T=${CARGO_TARGET_DIR:-$ROOT/target}/release
BIN=$T/tandem
mkdir -p "$OUT"
"$T/xtask" lab down >/dev/null 2>&1 || true
"$T/xtask" lab up --nodes 3 --clients 1 | tee "$OUT/lab.txt"
LABROOT=$(sed -n 's/.*files under \(.*\)$/\1/p' "$OUT/lab.txt" | head -1)
SW=$(awk '/switch: bridge/ {print $1}' "$OUT/lab.txt")
NS=($(awk '/ node [0-9]: / {print $1}' "$OUT/lab.txt"))
CL=$(awk '/ client 1: / {print $1}' "$OUT/lab.txt")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 1
  "$T/xtask" lab down >/dev/null 2>&1 || true
}
trap cleanup EXIT
ip netns exec "$SW" tcpdump -i br0 -s 0 -U -w "$OUT/lab.pcap" 'udp or tcp port 7480' 2>"$OUT/tcpdump.log" &
pids+=($!)
sleep 1
for i in 1 2 3; do
  ip netns exec "${NS[$((i-1))]}" "$BIN" daemon --config "$LABROOT/n$i/node.toml" >"$OUT/daemon$i.log" 2>&1 &
  pids+=($!)
  cp "$LABROOT/n$i/node.toml" "$OUT/node$i.toml"
done
sleep 3
for i in 2 3; do
  ip netns exec "${NS[$((i-1))]}" "$BIN" --api "http://10.99.0.1$i:7481" cluster join 10.99.0.11:7481
done
sleep 2
sed -n '/^pub const SERVICE_TOML: &str = r#"/,/^"#;/p' "$ROOT/lab/src/lib.rs" | sed '1s/.*r#"//;$d' >"$OUT/service.toml"
ip netns exec "${NS[1]}" "$BIN" --api http://10.99.0.12:7481 apply "$OUT/service.toml"
head -c 300000 /dev/urandom >"$OUT/boot.bin"
for i in 1 2 3; do cp "$OUT/boot.bin" "$LABROOT/n$i/artifacts/boot.bin"; done
sleep 2
C="ip netns exec $CL"
$C busybox udhcpc -f -q -n -i eth1 -t 3 -T 1 -s /bin/true -x hostname:lab-client -V PXEClient:Arch:00000:UNDI:002001 || true
$C dhclient -1 -v -pf "$OUT/dhclient.pid" -lf "$OUT/dhclient.leases" -sf /bin/true eth1 || true
$C dhclient -r -v -pf "$OUT/dhclient.pid" -lf "$OUT/dhclient.leases" -sf /bin/true eth1 || true
$C ip addr add 10.99.2.5/16 dev eth1
$C timeout 8 perfdhcp -4 -l 10.99.2.5 -r 20 -R 50 -p 3 10.99.0.10 || true
$C bash -c "cd $OUT && tftp -m binary 10.99.0.10 -c get boot.bin tftp-hpa.bin" || true
$C bash -c "cd $OUT && tftp -m binary 10.99.0.10 -c get missing.bin" || true
$C atftp --option 'blksize 1428' --option 'tsize 0' -g -r boot.bin -l "$OUT/atftp.bin" 10.99.0.10 || true
$C atftp --option 'windowsize 8' --option 'blksize 512' -g -r boot.bin -l "$OUT/atftp2.bin" 10.99.0.10 || true
$C curl -s --tftp-blksize 1024 -o "$OUT/curl.bin" tftp://10.99.0.10/boot.bin || true
$C curl -s -o "$OUT/curl-missing.bin" tftp://10.99.0.10/../etc/passwd || true
# Leadership moves: vote and pre-vote frames.
ip netns exec "${NS[0]}" "$BIN" --api http://10.99.0.11:7481 cluster handover || true
sleep 3
ip netns exec "${NS[0]}" "$BIN" --api http://10.99.0.11:7481 status >"$OUT/status.txt" 2>&1 || true
