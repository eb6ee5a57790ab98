# unbaked on Nomad (written against Nomad 1.9; see README.md here). The
# broker runs on every client node (the systemd unit in dist/systemd, with
# the drop-in of README.md); tasks reach it through its socket directory.
#
# Two ways to deliver, pick per task:
#  - `exec`: the task's command runs under `unbaked exec`: env and sealed
#    memfd grants, nothing written anywhere (the simplest; no sidecar).
#  - sidecar: a prestart sidecar task keeps file grants fresh in a tmpfs
#    host volume shared with the app task.
#
# The exec driver runs each task in a chroot that holds neither the broker's
# socket nor a shared tmpfs: both come in as host volumes declared in the
# client configuration (client.hcl here). Tasks run as `billing`, a host
# user whose uid the workload's policy matches ([match] uids), not as the
# driver's default `nobody`.
job "billing" {
  datacenters = ["dc1"]

  group "billing" {
    # The broker's socket directory (not the socket file: the broker
    # recreates the socket at every start, a mounted file would go stale).
    volume "unbaked-socket" {
      type      = "host"
      source    = "unbaked-socket"
      read_only = true
    }

    # A tmpfs on the client, outside the broker's RuntimeDirectory (which
    # systemd empties at every broker stop).
    volume "secrets" {
      type      = "host"
      source    = "unbaked-secrets"
      read_only = false
    }

    task "unbaked" {
      driver = "exec"
      user   = "billing"

      lifecycle {
        hook    = "prestart"
        sidecar = true
      }

      config {
        command = "/usr/local/bin/unbaked"
        args    = ["sidecar", "--workload", "billing", "--dir", "/run/secrets/${NOMAD_ALLOC_ID}"]
      }

      env {
        UNBAKED_SOCKET = "/run/unbaked/broker.sock"
      }

      volume_mount {
        volume      = "unbaked-socket"
        destination = "/run/unbaked"
        read_only   = true
      }

      volume_mount {
        volume      = "secrets"
        destination = "/run/secrets"
      }

      # SIGTERM on stop: files zeroed and unlinked, lease revoked.
      kill_signal  = "SIGTERM"
      kill_timeout = "5s"
    }

    task "app" {
      driver = "exec"
      user   = "billing"

      config {
        command = "/usr/local/bin/unbaked"
        args = ["exec", "--workload", "billing", "--", "/usr/local/bin/billing",
        "--db-password-file", "/run/secrets/${NOMAD_ALLOC_ID}/db_password"]
      }

      env {
        UNBAKED_SOCKET = "/run/unbaked/broker.sock"
      }

      volume_mount {
        volume      = "unbaked-socket"
        destination = "/run/unbaked"
        read_only   = true
      }

      volume_mount {
        volume      = "secrets"
        destination = "/run/secrets"
        read_only   = true
      }
    }
  }
}
