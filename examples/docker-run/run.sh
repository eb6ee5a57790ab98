#!/bin/sh
# `unbaked run` in place of `docker run`: the same flags, plus the workload.
# The broker must run (unbaked broker --policies examples/docker-run/policies)
# and `unbaked` must be the static build (scripts/build-static), because it is
# bind-mounted into the container as the exec shim.
set -eu

# What will run (never holds a secret):
unbaked run --workload billing --dry-run -- --rm --user 1000 -p 8080:8080 billing:1.4

# The real thing; the exit code is the container's.
exec unbaked run --workload billing -- --rm --user 1000 -p 8080:8080 --tmpfs /tmp billing:1.4
