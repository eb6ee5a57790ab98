# unbaked on Nomad. The broker runs on every client node (a system job, or
# the systemd unit in dist/systemd); tasks reach it through its socket.
#
# Two ways to deliver, pick per task:
#  - `exec`: the task's command runs under `unbaked exec`: env and sealed
#    memfd grants, nothing written anywhere (the simplest; no sidecar).
#  - sidecar: a prestart sidecar task keeps file grants fresh in a tmpfs
#    host volume shared with the app task.
job "billing" {
  datacenters = ["dc1"]

  group "billing" {
    # A tmpfs on every client, declared in the client config:
    #   client { host_volume "unbaked-secrets" { path = "/run/unbaked/secrets" } }
    # with /run on tmpfs (it is, on systemd hosts).
    volume "secrets" {
      type      = "host"
      source    = "unbaked-secrets"
      read_only = false
    }

    task "unbaked" {
      driver = "exec"
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
        volume      = "secrets"
        destination = "/run/secrets"
      }
      # SIGTERM on stop: files zeroed and unlinked, lease revoked.
      kill_signal  = "SIGTERM"
      kill_timeout = "5s"
    }

    task "app" {
      driver = "exec"
      config {
        command = "/usr/local/bin/unbaked"
        args    = ["exec", "--workload", "billing", "--", "/usr/local/bin/billing",
                   "--db-password-file", "/run/secrets/${NOMAD_ALLOC_ID}/db_password"]
      }
      env {
        UNBAKED_SOCKET = "/run/unbaked/broker.sock"
      }
      volume_mount {
        volume      = "secrets"
        destination = "/run/secrets"
        read_only   = true
      }
    }
  }
}
