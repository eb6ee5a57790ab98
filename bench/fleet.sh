# The Vault fleet (issue 18), sourced by bench/run: BENCH_FLEET (default
# 1,000) workloads, one secret each in OpenBao, rotated every 10 s for
# BENCH_FLEET_SECONDS (default 60); one sidecar per workload (its own uid,
# ttl 30 s). Judged by the products' own records (bench/fleet.py): the
# broker's grant/renew records against the rotations' write times, and
# OpenBao's audit device for its reads. Broker CPU over the rotation
# window from /proc/PID/stat.

fleet_policies() { # DIR N
  local dir=$1 n=$2 i
  mkdir -p "$dir"
  for i in $(seq 0 $((n - 1))); do
    printf 'workload = "fleet-%s"\n\n[match]\nuids = [%s]\n\n[[grant]]\nsecret = "app/fleet-%s"\nkey = "password"\nfile = "password"\nttl = "30s"\n' \
      "$i" $((FLEET_UID + i)) "$i" >"$dir/fleet-$i.toml"
  done
}

# Every sidecar under DIR has written its file.
fleet_delivered() { [ "$(find "$1" -name password | wc -l)" = "$2" ]; }

# utime + stime of a process, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

sec_fleet() {
  local n=${BENCH_FLEET:-1000} secs=${BENCH_FLEET_SECONDS:-60}
  FLEET_UID=${BENCH_FLEET_UID:-20000}
  say "Vault fleet: $n workloads x 1 secret rotated every 10 s, $n sidecars on ttl 30 s, for $secs s"
  python3 "$ROOT/bench/fleet.py" seed "$BAO_ADDR_URL" "$S/root_token" "$n"
  fleet_policies "$W/fleet-policies" "$n"
  start_broker fleet vault "$W/fleet-policies"
  # The sidecars' uids reach the socket through $W: crossing it (0711)
  # names nothing; the tokens stay in $S (0700).
  chmod 0711 "$W"
  local sock="$W/fleet.sock" broker i
  broker=$(cat "$W/fleet.pid")
  # The sidecars' directories: a tmpfs of their own that every uid may
  # cross (0711) but not list; $S (tokens) stays root's.
  local fleet
  fleet=$(mktemp -d /var/tmp/unbaked-fleet.XXXXXX)
  mount -t tmpfs -o size=64m,mode=0711 tmpfs "$fleet"
  echo "$fleet" >"$W/fleet.mount"
  mkdir -p "$W/fleet-logs"
  for i in $(seq 0 $((n - 1))); do
    install -d -m 0700 -o $((FLEET_UID + i)) -g $((FLEET_UID + i)) "$fleet/$i"
    UNBAKED_LOG=info UNBAKED_LOG_FORMAT=json setpriv --reuid=$((FLEET_UID + i)) --regid=$((FLEET_UID + i)) --clear-groups \
      "$UNBAKED" --socket "$sock" sidecar --workload "fleet-$i" --dir "$fleet/$i" \
      >/dev/null 2>"$W/fleet-logs/$i.log" &
    echo $! >"$W/fleet-sidecar-$i.pid"
  done
  wait_until 120 fleet_delivered "$fleet" "$n" ||
    die "not every fleet sidecar delivered: $(find "$fleet" -name password | wc -l) of $n (logs: $W/fleet-logs)"
  local t0 c0 t1 c1 line
  t0=$(date +%s.%N)
  c0=$(cpu_ticks "$broker")
  python3 "$ROOT/bench/fleet.py" rotate "$BAO_ADDR_URL" "$S/root_token" "$n" 10 "$secs" "$W/fleet-rotations.txt"
  c1=$(cpu_ticks "$broker")
  t1=$(date +%s.%N)
  # Every rotation written in the window reaches its workload within one
  # ttl: wait one ttl and a margin past the last, then read the records.
  sleep 35
  # SIGTERM to all at once (each wipes its file and revokes), then reaped.
  local stoppers=()
  for i in $(seq 0 $((n - 1))); do
    stop_pid_file "$W/fleet-sidecar-$i.pid" &
    stoppers+=($!)
  done
  wait "${stoppers[@]}"
  line=$(python3 "$ROOT/bench/fleet.py" report "$W/fleet-rotations.txt" "$W/fleet-audit.log" "$BAO_AUDIT" 30 "$(date +%s.%N)")
  note "$line"
  local cpu
  cpu=$(echo "($c1 - $c0) / $(getconf CLK_TCK) / ($t1 - $t0) * 100" | bc -l)
  result "Vault fleet: rotations reaching their sidecar later than one ttl" "$(field "$line" late)" "" rotations "==0" \
    "$(field "$line" reached) of $(field "$line" rotations) reached (missing $(field "$line" missing)); delay p50 $(field "$line" p50_s) s, p99 $(field "$line" p99_s) s, max $(field "$line" max_s) s (ttl 30 s, rotation every 10 s)"
  result "Vault fleet: OpenBao reads per refresh" "$(echo "$(field "$line" bao_reads) / $(field "$line" refreshes)" | bc -l)" "" reads "<=1" \
    "$(field "$line" bao_reads) reads of app/fleet-* for $(field "$line" refreshes) grants and renewals (whole run, OpenBao's audit device)"
  result "Vault fleet: broker CPU" "$cpu" "" "% of a core" "-" \
    "$n sidecars renewing, $n secrets rotated every 10 s, over the $secs s rotation window"
  stop_pid_file "$W/fleet.pid"
  umount "$fleet" && rmdir "$fleet" && rm "$W/fleet.mount"
}
