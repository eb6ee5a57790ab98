//! `unbaked broker --dev`: the embedded default a newcomer starts first: the
//! memory store, the repository's example policies, and a demo workload
//! that matches whoever runs the broker.

use std::path::Path;
use std::time::Duration;
use unbaked_policy::{Grant, GrantDelivery, Isolation, Launch, Match, Policy, PolicySet};

pub const DEMO_WORKLOAD: &str = "demo";
pub const DEMO_SECRET: &str = "demo/hello";
pub const DEMO_KEY: &str = "message";

/// The demo secret's value: not a credential, so it may appear in the
/// instructions below.
pub const DEMO_VALUE: &[u8] = b"hello from unbaked";

pub fn demo_policy(uid: u32) -> Policy {
    let grant = |delivery| Grant {
        secret: DEMO_SECRET.into(),
        key: DEMO_KEY.into(),
        dynamic: None,
        delivery,
        ttl: Duration::from_secs(60),
        mode: 0o400,
        uid: None,
        gid: None,
        on_change: None,
        debounce: unbaked_policy::DEFAULT_DEBOUNCE,
    };
    Policy {
        workload: DEMO_WORKLOAD.into(),
        source: "(built in by --dev)".into(),
        matcher: Match {
            uids: vec![uid],
            ..Match::default()
        },
        launch: Launch {
            uids: vec![uid],
            gids: vec![],
        },
        isolation: Isolation::default(),
        grants: vec![
            grant(GrantDelivery::File("message".into())),
            grant(GrantDelivery::Env("DEMO_MESSAGE".into())),
            grant(GrantDelivery::Fd("DEMO_MESSAGE_FILE".into())),
        ],
        templates: vec![],
    }
}

/// Add the demo workload unless a policy file already claims the name.
pub fn add_demo(set: &mut PolicySet, uid: u32) {
    if set.get(DEMO_WORKLOAD).is_none() {
        set.insert(demo_policy(uid));
    }
}

/// What to try next, printed once the socket listens.
pub fn banner(socket: &Path, policies: Option<&Path>, workloads: usize) -> String {
    let s = socket.display();
    let from = policies.map_or("no policies directory".to_string(), |p| {
        format!("policies from {}", p.display())
    });
    format!(
        "unbaked broker --dev: embedded memory store, {workloads} workloads ({from}, plus the demo workload)\n\
         listening on {s}\n\
         \n\
         try, in another terminal:\n\
         \x20 export UNBAKED_SOCKET={s}\n\
         \x20 unbaked exec --workload demo -- sh -c 'echo \"$DEMO_MESSAGE\"; cat \"$DEMO_MESSAGE_FILE\"'\n\
         \x20 unbaked sidecar --workload demo --dir /dev/shm/unbaked-demo --once && cat /dev/shm/unbaked-demo/message\n\
         \x20 printf 'rotated' | unbaked secret put demo/hello message=-\n\
         \x20 unbaked secret list\n\
         \x20 unbaked policy check policies\n"
    )
}
