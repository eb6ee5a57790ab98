//! Host processes, by the kernel's peer credentials on the unix socket
//! (SO_PEERCRED): the caller cannot choose what the kernel reports.
//!
//! The pid in those credentials is the connecting process's at connect
//! time; once that process exits, the number may be handed to another one.
//! [`PeerProcess`] holds a pidfd of the connecting process (SO_PEERPIDFD),
//! which never comes to name another process, so the server can tell
//! whether what `/proc/<pid>` says still belongs to the caller.

use super::Caller;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{getsockopt, sockopt};
use std::os::fd::{AsFd, OwnedFd};
use tokio::net::UnixStream;

pub fn peer(stream: &UnixStream) -> std::io::Result<Caller> {
    let cred = stream.peer_cred()?;
    Ok(Caller {
        uid: cred.uid(),
        gid: cred.gid(),
        pid: cred.pid(),
        container: None,
        service_account: None,
    })
}

/// The process that opened a connection, as the kernel pinned it.
#[derive(Debug)]
pub enum PeerProcess {
    /// A pidfd of the connecting process (Linux 6.5 and later).
    Pidfd(OwnedFd),
    /// The connecting process was already gone when we asked.
    Gone,
    /// The kernel has no SO_PEERPIDFD: only the pid is known, and the
    /// container attestation's own re-read narrows the reuse window.
    Unsupported,
}

impl PeerProcess {
    pub fn of(stream: &UnixStream) -> PeerProcess {
        match getsockopt(stream, sockopt::PeerPidfd) {
            Ok(fd) => PeerProcess::Pidfd(fd),
            // The peer's struct pid has no task left: it exited (and was reaped).
            Err(Errno::ESRCH | Errno::EINVAL) => PeerProcess::Gone,
            Err(_) => PeerProcess::Unsupported,
        }
    }

    /// Whether a pidfd pins the connecting process, so `/proc/<pid>` names
    /// it for as long as [`PeerProcess::exited`] says it lives.
    pub fn pinned(&self) -> bool {
        matches!(self, PeerProcess::Pidfd(_))
    }

    /// Whether the connecting process has exited. A pidfd turns readable
    /// when its process exits, so a live process here means every
    /// `/proc/<pid>` read before this call was of the caller itself.
    pub fn exited(&self) -> bool {
        match self {
            PeerProcess::Pidfd(fd) => {
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                match poll(&mut fds, PollTimeout::ZERO) {
                    Ok(0) => false,
                    Ok(_) => fds[0]
                        .revents()
                        .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP)),
                    // Cannot tell: treat as gone rather than trust a pid.
                    Err(_) => true,
                }
            }
            PeerProcess::Gone => true,
            PeerProcess::Unsupported => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_live_peer_is_pinned_and_not_exited() {
        let (a, _b) = UnixStream::pair().unwrap();
        let pinned = PeerProcess::of(&a);
        // The CI kernel (6.5+) has SO_PEERPIDFD; the peer is this process.
        assert!(matches!(pinned, PeerProcess::Pidfd(_)), "{pinned:?}");
        assert!(!pinned.exited());
        assert_eq!(peer(&a).unwrap().pid, Some(std::process::id() as i32));
    }
}
