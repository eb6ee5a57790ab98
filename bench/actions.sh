# Section `rotation` of bench/run (sourced): the time from a `bao kv put`
# to the app having received its signal with the new content, unbaked
# sidecar against bao agent, side by side on the same puts.
#
# Each side has its own app: a Python process that, on SIGHUP, reads its
# file and appends the time and the SHA-256 of what it read (never the
# value). The sidecar renders a text template with on_change = "command"
# (`kill -HUP APP`, debounce 0s); the agent renders the same template with
# the same command (`exec { command }`). Both poll: the template's ttl is 3s on unbaked
# (renewed at 55-67% of it, 1.7-2 s; the broker's cached Vault copy is at
# most a third of the ttl old) and the agent's
# static_secret_render_interval is 2s. Each put is a new random value; the
# next one waits until both apps have it, then a random 0-2 s, so the puts
# fall anywhere in both polling cycles.

# The apps' signal handler: the time and hash of the file as read.
rotation_app() {
  cat <<'PY'
import hashlib, signal, sys, time
path, out = sys.argv[1], sys.argv[2]
def hup(*_):
    t = time.time()
    try:
        with open(path, "rb") as f:
            h = hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return
    with open(out, "a") as f:
        f.write(f"{t:.6f} {h}\n")
signal.signal(signal.SIGHUP, hup)
while True:
    signal.pause()
PY
}

rotation_policy() {
  cat <<EOF
workload = "rotate"

[match]
uids = [0]

[[template]]
file = "value"
ttl = "3s"
contents = '{{ with secret "secret/data/app/rot" }}{{ .Data.data.password }}{{ end }}'
on_change = "command"
command = ["kill", "-HUP", "$1"]
debounce = "0s"
EOF
}

rotation_agent_conf() {
  cat <<EOF
vault {
  address = "$BAO_ADDR_URL"
}
auto_auth {
  method "approle" {
    config = {
      role_id_file_path = "$S/role_id"
      secret_id_file_path = "$S/secret_id"
      remove_secret_id_file_after_reading = false
    }
  }
}
template_config {
  static_secret_render_interval = "2s"
}
template {
  contents = "{{ with secret \\"secret/data/app/rot\\" }}{{ .Data.data.password }}{{ end }}"
  destination = "$S/rot-agent/value"
  perms = "0400"
  exec {
    command = ["kill", "-HUP", "$1"]
  }
}
EOF
}

# The time an app's log first shows hash H, else nothing.
rotation_seen() { awk -v h="$2" '$2 == h { print $1; exit }' "$1" 2>/dev/null; }
rotation_has() { [ -n "$(rotation_seen "$1" "$2")" ]; }

sec_rotation() {
  say "rotation: bao kv put -> app signalled with the new content; unbaked sidecar (template, on_change command) vs bao agent (template + command)"
  local n=${BENCH_ROTATIONS:-15}
  rotation_app >"$W/rot-app.py"
  mkdir -p "$S/rot-unbaked" "$S/rot-agent"
  head -c 24 /dev/urandom | base64 | tr -d '/+=\n' >"$S/rot-value"
  bao_cli kv put secret/app/rot password=- <"$S/rot-value" >/dev/null
  local side
  for side in unbaked agent; do
    python3 "$W/rot-app.py" "$S/rot-$side/value" "$W/rot-$side.log" &
    echo $! >"$W/rot-app-$side.pid"
  done
  rotation_policy "$(cat "$W/rot-app-unbaked.pid")" >"$W/policies/rotate.toml"
  start_broker rot vault
  "$UNBAKED" --socket "$W/rot.sock" sidecar --workload rotate --dir "$S/rot-unbaked" \
    2>"$W/rot-sidecar.log" &
  echo $! >"$W/rot-sidecar.pid"
  rotation_agent_conf "$(cat "$W/rot-app-agent.pid")" >"$W/agent-rot.hcl"
  "$BAO" agent -config "$W/agent-rot.hcl" >"$W/rot-agent.log" 2>&1 &
  echo $! >"$W/rot-agent.pid"
  wait_until 30 cmp -s "$S/rot-unbaked/value" "$S/rot-value" || die "the sidecar did not deliver: $W/rot-sidecar.log"
  wait_until 30 cmp -s "$S/rot-agent/value" "$S/rot-value" || die "the agent did not render: $W/rot-agent.log"
  local i h t0 tu ta
  : >"$W/rot-times.tsv"
  for i in $(seq 1 "$n"); do
    head -c 24 /dev/urandom | base64 | tr -d '/+=\n' >"$S/rot-value"
    h=$(sha256sum "$S/rot-value" | cut -d' ' -f1)
    t0=$(python3 -c 'import time; print(f"{time.time():.6f}")')
    bao_cli kv put secret/app/rot password=- <"$S/rot-value" >/dev/null
    wait_until 30 rotation_has "$W/rot-unbaked.log" "$h" ||
      die "rotation $i: the unbaked app was not signalled with the new value: $W/rot-sidecar.log"
    wait_until 30 rotation_has "$W/rot-agent.log" "$h" ||
      die "rotation $i: the agent's app was not signalled with the new value: $W/rot-agent.log"
    tu=$(rotation_seen "$W/rot-unbaked.log" "$h")
    ta=$(rotation_seen "$W/rot-agent.log" "$h")
    printf '%s\t%s\n' "$(echo "($tu - $t0) * 1000" | bc -l)" "$(echo "($ta - $t0) * 1000" | bc -l)" >>"$W/rot-times.tsv"
    sleep "$(python3 -c 'import random; print(f"{random.uniform(0, 2):.3f}")')"
  done
  local stats
  stats=$(python3 - "$W/rot-times.tsv" <<'PY'
import statistics, sys
rows = [tuple(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
u = sorted(r[0] for r in rows)
b = sorted(r[1] for r in rows)
p90 = lambda v: v[min(len(v) - 1, int(round(0.9 * (len(v) - 1))))]
print(statistics.median(u), statistics.median(b), p90(u), p90(b), max(u), max(b))
PY
)
  local um bm u90 b90 umax bmax signals
  read -r um bm u90 b90 umax bmax <<<"$stats"
  signals=$(wc -l <"$W/rot-unbaked.log")
  note "unbaked: median $um ms, p90 $u90 ms, max $umax ms; bao agent: median $bm ms, p90 $b90 ms, max $bmax ms; unbaked app signalled $signals times for $n puts"
  result "rotation: put to app signalled with it" "$um" "$bm" ms "-" \
    "median of $n puts; p90 $u90 vs $b90 ms; unbaked sidecar (template ttl 3s, on_change command kill -HUP, debounce 0s) vs bao agent (static_secret_render_interval 2s, template command kill -HUP)"
  for f in rot-sidecar rot-agent rot-app-unbaked rot-app-agent rot; do stop_pid_file "$W/$f.pid"; done
}
