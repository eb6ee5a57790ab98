//! Host processes, by the kernel's peer credentials on the unix socket
//! (SO_PEERCRED): the caller cannot choose what the kernel reports.

use super::Caller;
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
