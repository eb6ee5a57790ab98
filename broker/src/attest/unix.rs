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
use nix::time::{clock_gettime, ClockId};
use nix::unistd::{sysconf, SysconfVar};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use tokio::net::unix::UCred;
use tokio::net::UnixStream;

/// The caller the kernel's credentials of a connection name (one
/// SO_PEERCRED, taken once per connection by the server).
pub fn caller(cred: &UCred) -> Caller {
    Caller {
        uid: cred.uid(),
        gid: cred.gid(),
        pid: cred.pid(),
        container: None,
        service_account: None,
    }
}

/// How the connecting process is pinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PinMode {
    /// SO_PEERPIDFD where the kernel has it (6.5+), else [`PinMode::Procfs`].
    #[default]
    Auto,
    /// Always the `/proc/<pid>` directory descriptor, as on kernels before
    /// 6.5: the test seam that proves the fallback on a newer kernel.
    Procfs,
}

/// The process that opened a connection, as the kernel pinned it.
#[derive(Debug)]
pub enum PeerProcess {
    /// A pidfd of the connecting process (Linux 6.5 and later).
    Pidfd(OwnedFd),
    /// Kernels without SO_PEERPIDFD: a descriptor of the `/proc/<pid>`
    /// directory of the process that held the pid when the connection was
    /// accepted, and that process's start time (clock ticks since boot).
    /// Lookups through the descriptor fail once that process is gone, even
    /// if the pid is handed out again (SPIRE's peer tracker does the same);
    /// a process that started after the accept cannot be the one that
    /// connected, so a pid reused before we opened it is refused too.
    ProcDir { dir: File, start: u64 },
    /// The connecting process was already gone when we asked.
    Gone,
}

impl PeerProcess {
    /// Pin the process that opened `stream`, now. `cred` is the
    /// connection's SO_PEERCRED (taken once by the server); without it
    /// nothing is pinned. Before 6.5 the pin is of the process holding its
    /// pid at this moment, so the server calls this as it accepts.
    pub fn of(stream: &UnixStream, mode: PinMode, cred: Option<&UCred>) -> PeerProcess {
        let Some(cred) = cred else {
            return PeerProcess::Gone;
        };
        if mode == PinMode::Auto {
            match getsockopt(stream, sockopt::PeerPidfd) {
                Ok(fd) => return PeerProcess::Pidfd(fd),
                // The peer's struct pid has no task left: it exited (and was reaped).
                Err(Errno::ESRCH | Errno::EINVAL) => return PeerProcess::Gone,
                // ENOPROTOOPT: a kernel before 6.5.
                Err(_) => {}
            }
        }
        PeerProcess::by_procfs(cred.pid())
    }

    fn by_procfs(pid: Option<i32>) -> PeerProcess {
        // Taken before anything is opened: the caller connected before this
        // (by at most the accept's queue wait, so a reuse within that wait
        // is the residual window; docs/threat-model.md).
        let Some(accepted) = boot_ticks() else {
            return PeerProcess::Gone;
        };
        let Some(pid) = pid.filter(|p| *p > 0) else {
            return PeerProcess::Gone;
        };
        let Ok(dir) = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc_o_directory())
            .open(format!("/proc/{pid}"))
        else {
            return PeerProcess::Gone;
        };
        match start_time(&dir) {
            Some(start) if start <= accepted => PeerProcess::ProcDir { dir, start },
            _ => PeerProcess::Gone,
        }
    }

    /// Whether the connecting process is pinned, so `/proc/<pid>` names it
    /// for as long as [`PeerProcess::exited`] says it lives.
    pub fn pinned(&self) -> bool {
        !matches!(self, PeerProcess::Gone)
    }

    /// Whether the connecting process has exited. A pidfd turns readable
    /// when its process exits, and a `/proc/<pid>` descriptor stops
    /// answering, so a live process here means every `/proc/<pid>` read
    /// before this call was of the caller itself.
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
            PeerProcess::ProcDir { dir, start } => start_time(dir) != Some(*start),
            PeerProcess::Gone => true,
        }
    }
}

fn libc_o_directory() -> i32 {
    nix::fcntl::OFlag::O_DIRECTORY.bits() | nix::fcntl::OFlag::O_CLOEXEC.bits()
}

/// Now, in the clock ticks `/proc/<pid>/stat` counts start times in.
fn boot_ticks() -> Option<u64> {
    let now = clock_gettime(ClockId::CLOCK_BOOTTIME).ok()?;
    let hz = u64::try_from(sysconf(SysconfVar::CLK_TCK).ok()??).ok()?;
    let secs = u64::try_from(now.tv_sec()).ok()?;
    let nanos = u64::try_from(now.tv_nsec()).ok()?;
    Some(secs * hz + nanos * hz / 1_000_000_000)
}

/// Field 22 of `stat`, read through the `/proc/<pid>` descriptor: `None`
/// once its process is gone.
fn start_time(dir: &File) -> Option<u64> {
    let path = format!("/proc/self/fd/{}/stat", dir.as_raw_fd());
    let text = std::fs::read_to_string(path).ok()?;
    // `comm` (field 2) may hold spaces and parentheses: count after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    #[tokio::test]
    async fn a_live_peer_is_pinned_and_not_exited() {
        let (a, _b) = UnixStream::pair().unwrap();
        let cred = a.peer_cred().unwrap();
        let pinned = PeerProcess::of(&a, PinMode::Auto, Some(&cred));
        // The CI kernel (6.5+) has SO_PEERPIDFD; the peer is this process.
        assert!(matches!(pinned, PeerProcess::Pidfd(_)), "{pinned:?}");
        assert!(!pinned.exited());
        assert_eq!(caller(&cred).pid, Some(std::process::id() as i32));
    }

    /// The fallback, forced: pinned while the peer lives, exited once it is
    /// gone (whatever then holds its pid).
    #[tokio::test]
    async fn the_procfs_fallback_sees_the_peer_exit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let mut child = Command::new("perl")
            .args([
                "-e",
                "use IO::Socket::UNIX; my $s = IO::Socket::UNIX->new(Peer => $ARGV[0]) or die $!; <STDIN>;",
            ])
            .arg(&path)
            .stdin(Stdio::piped())
            .spawn()
            .expect("perl (perl-base) connects for the test");
        let (stream, _) = listener.accept().await.unwrap();
        let cred = stream.peer_cred().unwrap();
        let pinned = PeerProcess::of(&stream, PinMode::Procfs, Some(&cred));
        assert!(matches!(pinned, PeerProcess::ProcDir { .. }), "{pinned:?}");
        assert!(!pinned.exited(), "control: the live peer is not exited");
        child.stdin.take().unwrap().write_all(b"\n").unwrap();
        assert!(child.wait().unwrap().success());
        assert!(pinned.exited());
    }
}
