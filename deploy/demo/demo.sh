#!/usr/bin/env bash
# The tracker fleet lifecycle on one machine, against the local emulator:
# emulator -> fleet CA -> enrollment group -> N simulated trackers that
# provision through DPS and stream -> network cut and backlog drain ->
# one device disenrolled and refused -> the whole group deprovisioned.
#
# Usage: deploy/demo/demo.sh [N]   (make demo builds the binaries first)
set -euo pipefail

N=${1:-5}
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$root/bin
work=$(mktemp -d "${TMPDIR:-/tmp}/tracker-demo.XXXXXX")
emu=$work/emulator
group=cheese-fleet
shipment=SHP-2026-0042
pids=()

for b in trackerd trackerctl; do
	[[ -x $bin/$b ]] || { echo "demo: $bin/$b missing: run 'make build' (make demo does)" >&2; exit 1; }
done

cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT

bold() { printf '\033[1m%s\033[0m\n' "$*"; }
step() { printf '\n'; bold "== $*"; }
run() { printf '$ %s\n' "$*" | sed "s|$work|\$DEMO|g; s|$bin/||g"; "$@"; }

ids=()
for i in $(seq 1 "$N"); do ids+=("$(printf 'container-%04d' "$i")"); done

table() {
	echo "DEVICE           STATE          HUB              TEMP °C  POSITION             UNSENT"
	for id in "${ids[@]}"; do
		"$bin/trackerd" status --line --runtime-dir "$work/devices/$id/run" 2>/dev/null || printf '%-16s %s\n' "$id" "starting"
	done
}

# watch SECONDS: redraw the table every 2 s.
watch_table() {
	local end=$((SECONDS + $1))
	while ((SECONDS < end)); do
		table
		echo
		sleep 2
	done
}

unsent_total() {
	local total=0 n
	for id in "${ids[@]}"; do
		n=$("$bin/trackerd" status --line --runtime-dir "$work/devices/$id/run" 2>/dev/null | awk '{print $NF}')
		total=$((total + ${n:-0}))
	done
	echo "$total"
}

bold "tracker demo: $N simulated cold-chain containers (work directory \$DEMO=$work)"

step "1. A local Azure emulator: DPS + IoT Hub over mutual TLS, service REST over HTTPS"
"$bin/trackerctl" emulator --state "$emu" --mqtt-addr 127.0.0.1:0 --https-addr 127.0.0.1:0 >"$work/emulator.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do [[ -s $emu/emulator.json ]] && break; sleep 0.1; done
[[ -s $emu/emulator.json ]] || { echo "demo: the emulator did not start; see $work/emulator.log" >&2; exit 1; }
run "$bin/trackerctl" emulator status --state "$emu" | head -5

step "2. The fleet's root CA (its key never leaves the operator's machine)"
run "$bin/trackerctl" pki init-ca --out "$work/ca" --cn "Cheese Fleet Root CA"

step "3. An enrollment group: every device certificate signed by that CA may provision"
run "$bin/trackerctl" group create --emulator "$emu" --id "$group" --ca "$work/ca"

step "4. A device certificate and bundle per tracker (what gets stamped into each SD image)"
for id in "${ids[@]}"; do
	"$bin/trackerctl" device bundle --ca "$work/ca" --id "$id" --out "$work/devices/$id" --emulator "$emu" \
		--simulate --interval 2s --sensor-interval 1s --shipment "$shipment" >/dev/null
	cfg=$work/devices/$id/config.toml
	sed -i 's/^\[dps\]$/[dps]\nretry_min = "1s"\nretry_max = "5s"/' "$cfg"
	printf '\n[hub]\nreconnect_min = "500ms"\nreconnect_max = "3s"\n' >>"$cfg"
done
ls "$work/devices/${ids[0]}" | sed 's/^/  /'

step "5. The trackers boot: DPS assigns each to the hub, telemetry flows"
for id in "${ids[@]}"; do
	"$bin/trackerd" run --config "$work/devices/$id/config.toml" >"$work/devices/$id/trackerd.log" 2>&1 &
	pids+=($!)
done
watch_table 10

step "6. The container loses coverage for 12 s: readings wait in each tracker's durable buffer"
"$bin/trackerctl" emulator fault --state "$emu" --refuse-for 12s >/dev/null
for id in "${ids[@]}"; do "$bin/trackerctl" emulator fault --state "$emu" --drop "$id" >/dev/null; done
watch_table 10
echo "coverage is back: the backlog drains, oldest first, in batched messages"
for _ in $(seq 1 20); do
	[[ $(unsent_total) == 0 ]] && break
	sleep 1
done
table

step "7. ${ids[0]} is disenrolled (a disabled individual enrollment) and deregistered: DPS refuses it"
run "$bin/trackerctl" device disenroll --emulator "$emu" --id "${ids[0]}" --cert "$work/devices/${ids[0]}/device.chain.pem"
run "$bin/trackerctl" device deregister --emulator "$emu" --id "${ids[0]}"
for _ in $(seq 1 30); do
	"$bin/trackerd" status --line --runtime-dir "$work/devices/${ids[0]}/run" 2>/dev/null | grep -q disabled && break
	sleep 1
done
"$bin/trackerd" status --runtime-dir "$work/devices/${ids[0]}/run" | sed 's/^/  /'

step "8. Delivery: deprovision the whole group (enrollment, registrations, hub identities)"
run "$bin/trackerctl" group deprovision --emulator "$emu" --id "$group"
run "$bin/trackerctl" device list --emulator "$emu"
echo "(the disabled individual enrollment stays on purpose: deleting it would let the group admit that device again)"

step "Telemetry"
msgs=$(wc -l <"$emu/telemetry.jsonl")
echo "$msgs device-to-cloud messages, shaped like 'az iot hub monitor-events --properties all':"
echo "  $emu/telemetry.jsonl"
echo "the demo's files stay in $work (rm -rf it when done)"
