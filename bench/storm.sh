# The start storm (issue 18), sourced by bench/run: BENCH_STORM (default
# 100) containers started at once with `unbaked run` against the same
# number of plain `docker run`s on the workload's ICC-disabled network,
# in alternating rounds. Every wrapped container checks inside that its
# env and file grants arrived (never printing them); a failed start is
# any non-zero exit. The broker's VmRSS is read before the first round and
# after each, so growth from one storm to the next shows.

# Starts $STORM_N copies of COMMAND at once and waits for all; prints the
# wall time in ms and the number that failed. NAME names the logs.
storm_once() { # NAME COMMAND...
  local name=$1
  shift
  local t0 t1 fails=0 pids=() i
  t0=$(date +%s%N)
  for i in $(seq 1 "$STORM_N"); do
    "$@" >"$W/storm-$name-$i.log" 2>&1 &
    pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i" || fails=$((fails + 1)); done
  t1=$(date +%s%N)
  echo "$(((t1 - t0) / 1000000)) $fails"
}

sec_storm() {
  STORM_N=${BENCH_STORM:-100}
  say "start storm: $STORM_N containers at once, unbaked run vs docker run --rm on the workload's ICC-off network"
  "$ROOT/scripts/install-docker-deps"
  local image
  image=$(busybox_image)
  export UNBAKED_SHIM="$UNBAKED"
  local broker
  broker=$(cat "$W/vault.pid")
  # The first launch creates the workload's network; both sides then use it.
  $UNBAKED --socket "$VSOCK" run --workload benchrun -- --rm "$image" \
    "test -n \"\$DB_PASSWORD\" && test -s /run/secrets/db_password" 2>"$W/storm-check.log" ||
    die "unbaked run did not deliver: $W/storm-check.log"
  local check="test -n \"\$DB_PASSWORD\" && test -s /run/secrets/db_password"
  local rss0 rss=() u=() d=() ufail=0 dfail=0 r ms f
  rss0=$(rss_kb "$broker")
  for r in 1 2 3; do
    read -r ms f <<<"$(storm_once "docker-$r" docker run --rm --network unbaked-benchrun "$image" true)"
    d+=("$ms")
    dfail=$((dfail + f))
    read -r ms f <<<"$(storm_once "unbaked-$r" "$UNBAKED" --socket "$VSOCK" run --workload benchrun -- --rm "$image" "$check")"
    u+=("$ms")
    ufail=$((ufail + f))
    rss+=("$(rss_kb "$broker")")
    note "round $r: docker run ${d[-1]} ms, unbaked run ${u[-1]} ms; broker VmRSS ${rss[-1]} kB"
  done
  [ "$ufail" = 0 ] || note "unbaked run: $ufail failed starts (logs: $W/storm-unbaked-*.log)"
  [ "$dfail" = 0 ] || note "docker run: $dfail failed starts (logs: $W/storm-docker-*.log)"
  local um dm
  um=$(printf '%s\n' "${u[@]}" | sort -n | sed -n 2p)
  dm=$(printf '%s\n' "${d[@]}" | sort -n | sed -n 2p)
  result "start storm: $STORM_N x unbaked run vs docker run" "$um" "$dm" ms "ratio<=1.05" \
    "median of 3 alternating rounds, all $STORM_N started at once and waited for; failed starts: unbaked $ufail, docker $dfail"
  result "broker VmRSS after storms 1..3 (before: $rss0 kB)" "${rss[2]}" "${rss[0]}" kB "flat" \
    "after each round: ${rss[*]} kB; the reference column is after the first storm"
}
