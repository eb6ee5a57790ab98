# The Nomad client's part (merged into its configuration, e.g.
# /etc/nomad.d/unbaked.hcl): the host volumes billing.nomad.hcl mounts.
client {
  # The broker's socket directory. The broker's unit keeps it across
  # restarts (RuntimeDirectoryPreserve=yes, see README.md).
  host_volume "unbaked-socket" {
    path      = "/run/unbaked"
    read_only = true
  }

  # tmpfs (/run is one on systemd hosts), outside /run/unbaked; created at
  # boot by systemd-tmpfiles: d /run/unbaked-secrets 1733 root root -
  host_volume "unbaked-secrets" {
    path = "/run/unbaked-secrets"
  }
}
