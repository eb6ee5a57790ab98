# bench/run section `compose` (sourced by bench/run, not run): `unbaked
# compose -- up -d` of examples/compose against plain compose `up -d` of the
# same project with the very override `unbaked compose --dry-run` prints
# (the same networks, shim mounts and containers), so the difference is
# unbaked's own work: reading the project, the broker's plans, the memfd.
# Each `up -d` starts from nothing (`down -t 1` before it, not timed). Both
# compose CLIs: Debian's docker-compose 1.29, and Compose v2 (Debian
# trixie's, scripts/install-docker-deps) as the `docker compose` plugin.
ALL+=(compose)

# A broker of its own on the memory store, with the example's policies
# launchable by root (the example's say uid 1000) and its four secrets,
# random and never printed.
compose_broker() {
  local pol="$W/compose-policies"
  mkdir -p "$pol"
  for f in "$ROOT"/examples/compose/policies/*.toml; do
    sed 's/^uids = \[1000\]/uids = [0]/' "$f" >"$pol/$(basename "$f")"
  done
  grep -q '^uids = \[0\]' "$pol/billing.toml" || die "the example policies no longer say uids = [1000]"
  (
    export UNBAKED_LOG=info UNBAKED_LOG_FORMAT=json
    exec "$UNBAKED" broker --socket "$W/compose.sock" --policies "$pol" \
      --store memory --audit "$W/compose-audit.log" >/dev/null 2>"$W/compose.log"
  ) &
  echo $! >"$W/compose.pid"
  wait_until 15 python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])' "$W/compose.sock" ||
    die "the compose broker did not listen: see $W/compose.log"
  local s
  for s in billing/db:password billing/api:token reports/db:password reports/api:token; do
    head -c 18 /dev/urandom | base64 | tr -d '/+=\n' >"$S/compose-value"
    "$UNBAKED" --socket "$W/compose.sock" secret put "${s%%:*}" "${s#*:}=-" <"$S/compose-value" >/dev/null
  done
  rm -f "$S/compose-value"
}

# compose_round NAME CLI...: interleaved hyperfine rounds of unbaked
# compose against the plain CLI with the same override; one result row.
compose_round() {
  local name=$1
  shift
  local cli=("$@") proj=unbaked-bench-compose
  local ex="$ROOT/examples/compose/docker-compose.yml" ov="$W/compose-override-$name.json"
  local wrap="$UNBAKED --socket $W/compose.sock compose -- -p $proj -f $ex up -d"
  export UNBAKED_COMPOSE="${cli[*]}"
  # The first run makes the workload networks and proves delivery.
  $wrap >"$W/compose-first-$name.log" 2>&1 ||
    die "unbaked compose ($name) failed: $W/compose-first-$name.log"
  local c
  for c in billing reports; do
    wait_until 30 sh -c "docker logs ${proj}_${c}_1 2>&1 | grep -q 'db_password delivered' ||
      docker logs ${proj}-${c}-1 2>&1 | grep -q 'db_password delivered'" ||
      die "$c got no secret file ($name): $W/compose.log"
  done
  $UNBAKED --socket "$W/compose.sock" compose --dry-run -- -p "$proj" -f "$ex" up -d >"$ov" ||
    die "unbaked compose --dry-run ($name) failed"
  local plain="${cli[*]} -p $proj -f $ex -f $ov up -d"
  local down="${cli[*]} -p $proj -f $ex -f $ov down -t 1"
  local rounds=4 per=$(((RUNS / 4 + 3) / 4)) files=()
  [ "$per" -ge 3 ] || per=3
  for r in $(seq 1 $rounds); do
    local order=(-n unbaked "$wrap" -n plain "$plain")
    [ $((r % 2)) = 0 ] && order=(-n plain "$plain" -n unbaked "$wrap")
    hyperfine -N --style basic --warmup 1 --runs "$per" --prepare "$down" \
      --export-json "$W/compose-$name-$r.json" "${order[@]}" >&2
    files+=("$W/compose-$name-$r.json")
  done
  $down >/dev/null 2>&1
  unset UNBAKED_COMPOSE
  local u us un b bs bn ci
  read -r u us un <<<"$(python3 "$ROOT/bench/report.py" hyperfine unbaked "${files[@]}")"
  read -r b bs bn <<<"$(python3 "$ROOT/bench/report.py" hyperfine plain "${files[@]}")"
  ci=$(python3 -c "import math,sys; u,us,un,b,bs,bn=map(float,sys.argv[1:]); r=u/b; print(f'{1.96*r*math.sqrt((us/u)**2/un+(bs/b)**2/bn):.3f}')" "$u" "$us" "$un" "$b" "$bs" "$bn")
  result "unbaked compose up -d vs ${cli[*]} up -d" "$u" "$b" ms "ratio<=1.10" \
    "examples/compose (2 workload services, 1 plain), the same override for both; $un runs each in $rounds interleaved rounds after down -t 1; sd $us / $bs ms; ratio 95% CI +-$ci"
}

sec_compose() {
  say "unbaked compose -- up -d vs plain compose up -d of examples/compose, same override (same networks)"
  "$ROOT/scripts/install-docker-deps"
  local ctx="$W/image-compose"
  mkdir -p "$ctx"
  cp /bin/busybox "$ctx/busybox"
  printf '%s\n' 'FROM scratch' 'COPY busybox /bin/busybox' \
    'RUN ["/bin/busybox", "--install", "-s", "/bin"]' >"$ctx/Dockerfile"
  export APP_IMAGE=unbaked-bench/busybox-compose:1
  docker build -q -t "$APP_IMAGE" "$ctx" >/dev/null
  export UNBAKED_SHIM="$UNBAKED"
  compose_broker
  compose_round v1 docker-compose
  # Compose v2 found the way a user has it: a CLI plugin directory.
  mkdir -p "$W/docker-config"
  printf '{"cliPluginsExtraDirs": ["%s"]}\n' "${UNBAKED_TOOLS_DIR:-/var/cache/unbaked}/compose-v2" >"$W/docker-config/config.json"
  export DOCKER_CONFIG="$W/docker-config"
  compose_round v2 docker compose
  unset DOCKER_CONFIG
  stop_pid_file "$W/compose.pid"
  docker network rm unbaked-billing unbaked-reports >/dev/null 2>&1 || true
}
