# Helpers for bench/run (sourced, not run). What a benchmark starts lives
# under $W (disk: audit files, logs) and $S (a tmpfs: the secret value,
# tokens, AppRole ids, delivered files) and is stopped by cleanup. Secret
# values and tokens are generated, passed in files, stdin or the
# environment, and never printed or put on a command line.

say() { printf '\n== %s\n' "$*" >&2; }
note() { printf '   %s\n' "$*" >&2; }
die() {
  printf 'bench: %s\n' "$*" >&2
  exit 1
}

# One result row: metric, unbaked, reference, unit, target, detail.
# bench/report.py turns the rows into the summary table.
result() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$W/results.tsv"; }

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_until() { # SECONDS COMMAND...
  local end=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || return 1
    sleep 0.05
  done
}

# Tools from Debian's packages, the way scripts/test installs its own.
install_tools() {
  local need=()
  command -v hyperfine >/dev/null || need+=(hyperfine)
  command -v wrk >/dev/null || need+=(wrk)
  [ -x /usr/bin/time ] || need+=(time)
  command -v python3 >/dev/null || need+=(python3)
  command -v readelf >/dev/null || need+=(binutils)
  if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]} (apt)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

# The static release binary (what ships, and the shim `unbaked run` mounts)
# and the load generator, built outside the product workspace.
build_binaries() {
  say "building the static release unbaked (scripts/build-static) and bench/loadgen"
  # BENCH_UNBAKED: a static build made already (e.g. by scripts/test).
  UNBAKED=${BENCH_UNBAKED:-$("$ROOT/scripts/build-static")}
  [ -x "$UNBAKED" ] || die "no static unbaked at '$UNBAKED'"
  CARGO_TARGET_DIR="$ROOT/target/bench-loadgen" \
    cargo build --quiet --release --locked --manifest-path "$ROOT/bench/loadgen/Cargo.toml" >&2
  LOADGEN="$ROOT/target/bench-loadgen/release/unbaked-loadgen"
}

# A dev OpenBao on a free loopback port with a file audit device (it
# counts Vault reads for the single-flight check), AppRole for the agent
# and a read-only token for the broker.
start_bao() {
  BAO=$("$ROOT/scripts/install-openbao" 2>/dev/null) || die "scripts/install-openbao failed"
  local port
  port=$(free_port)
  BAO_ADDR_URL="http://127.0.0.1:$port"
  BAO_AUDIT="$W/bao-audit.log"
  printf 'audit "file" "to-file" {\n  options {\n    file_path = "%s"\n  }\n}\n' \
    "$BAO_AUDIT" >"$W/bao.hcl"
  # Dev mode prints its random root token: that output goes to the tmpfs.
  "$BAO" server -dev -dev-listen-address="127.0.0.1:$port" -config="$W/bao.hcl" \
    >"$S/bao-server.log" 2>&1 &
  echo $! >"$W/bao.pid"
  wait_until 30 bao_up || die "bao server did not start: $(tail -3 "$S/bao-server.log")"
  sed -n 's/^Root Token: //p' "$S/bao-server.log" | head -1 >"$S/root_token"
  # The benchmark's secret: random, written from stdin.
  head -c 24 /dev/urandom | base64 | tr -d '/+=\n' >"$S/value"
  bao_cli kv put secret/app/db password=- <"$S/value" >/dev/null
  bao_cli auth enable approle >/dev/null
  printf 'path "secret/data/app/*" { capabilities = ["read"] }\n' |
    bao_cli policy write bench - >/dev/null
  bao_cli write auth/approle/role/bench token_policies=bench token_ttl=1h >/dev/null
  bao_cli read -field=role_id auth/approle/role/bench/role-id >"$S/role_id"
  bao_cli write -f -field=secret_id auth/approle/role/bench/secret-id >"$S/secret_id"
  bao_cli token create -policy=bench -ttl=2h -field=token >"$S/broker_token"
}

# The CLI against our server only, the token from its file.
bao_cli() {
  BAO_ADDR=$BAO_ADDR_URL BAO_TOKEN=$(cat "$S/root_token") "$BAO" "$@"
}

# Our server is up: our process lives (another server on a reused port
# would answer health too) and it has printed its token and answers.
bao_up() {
  kill -0 "$(cat "$W/bao.pid")" &&
    grep -q '^Root Token: ' "$S/bao-server.log" &&
    python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/v1/sys/health", timeout=1)' "$BAO_ADDR_URL"
}

# `request` entries of the bao audit log for OPERATION on PATH.
bao_audited() {
  python3 - "$BAO_AUDIT" "$1" "$2" <<'PY'
import json, sys
n = 0
for line in open(sys.argv[1]):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    r = e.get("request", {})
    if e.get("type") == "request" and r.get("operation") == sys.argv[2] and r.get("path") == sys.argv[3]:
        n += 1
print(n)
PY
}

# The policies every benchmark uses: `bench` (a host process, root: one
# file and one env grant of the same secret), `burst` (a secret nobody has
# read yet, for single flight) and `benchrun` (containers by label,
# launched by root with `unbaked run`).
write_policies() {
  local dir=$1
  mkdir -p "$dir"
  cat >"$dir/bench.toml" <<'EOF'
workload = "bench"

[match]
uids = [0]

[[grant]]
secret = "app/db"
key = "password"
file = "db_password"
ttl = "1m"

[[grant]]
secret = "app/db"
key = "password"
env = "DB_PASSWORD"
ttl = "1m"
EOF
  cat >"$dir/burst.toml" <<'EOF'
workload = "burst"

[match]
uids = [0]

[[grant]]
secret = "app/burst"
key = "password"
file = "burst"
ttl = "1m"
EOF
  cat >"$dir/benchrun.toml" <<'EOF'
workload = "benchrun"

[match]
docker_labels = { app = "benchrun" }

[launch]
uids = [0]

[[grant]]
secret = "app/db"
key = "password"
env = "DB_PASSWORD"
ttl = "1m"

[[grant]]
secret = "app/db"
key = "password"
file = "db_password"
ttl = "1m"
EOF
}

# start_broker NAME STORE: a broker on $W/NAME.sock with an audit file on
# disk, logging as the shipped systemd unit has it (info, JSON: one line
# per grant) to a file.
start_broker() { # NAME STORE [POLICY_DIR (written already; default: write_policies)]
  local name=$1 store=$2 policies=${3:-}
  local sock="$W/$name.sock"
  [ -n "$policies" ] || { policies="$W/policies" && write_policies "$policies"; }
  (
    export UNBAKED_LOG=info UNBAKED_LOG_FORMAT=json
    # The token reaches the broker in its environment, not its arguments.
    if [ "$store" = vault ]; then
      export VAULT_ADDR="$BAO_ADDR_URL"
      VAULT_TOKEN=$(cat "$S/broker_token")
      export VAULT_TOKEN
    fi
    exec "$UNBAKED" broker --socket "$sock" --policies "$policies" \
      --store "$store" --audit "$W/$name-audit.log" >/dev/null 2>"$W/$name.log"
  ) &
  echo $! >"$W/$name.pid"
  wait_until 15 python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])' "$sock" ||
    die "the $name broker did not listen: see $W/$name.log"
  if [ "$store" = memory ]; then
    "$UNBAKED" --socket "$sock" secret put app/db password=- <"$S/value" >/dev/null
  fi
}

stop_pid_file() {
  local f=$1 pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$f"
}

# The FROM-scratch busybox image the Docker sections run (built once,
# cached by the engine); prints its tag. DOCKER_HOST picks the engine.
busybox_image() {
  local ctx="$W/image" image=unbaked-bench/busybox:1
  mkdir -p "$ctx"
  cp /bin/busybox "$ctx/busybox"
  printf '%s\n' 'FROM scratch' 'COPY busybox /bin/busybox' \
    'RUN ["/bin/busybox", "--install", "-s", "/bin"]' \
    'ENTRYPOINT ["/bin/sh", "-c"]' 'CMD ["true"]' >"$ctx/Dockerfile"
  docker build -q -t "$image" "$ctx" >/dev/null || die "docker build of $image failed"
  echo "$image"
}

# VmRSS of a process, kB.
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# A key=value field of a loadgen line.
field() { printf '%s\n' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
