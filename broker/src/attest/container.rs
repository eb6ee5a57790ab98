//! The container a caller runs in, as a container platform attested it
//! ([`crate::platform`]): the facts the core reads for `[match]` and the
//! audit, and the platform's own evidence behind them.

use std::any::Any;
use std::sync::{Arc, OnceLock};
use unbaked_policy::ContainerInfo;

/// What a platform learnt about the container a caller runs in. The core
/// reads the identity (for `[match]` and the audit); the platform reads its
/// own evidence back through [`Evidence::as_any`].
pub trait Evidence: std::fmt::Debug + Send + Sync + 'static {
    /// The container's full id.
    fn id(&self) -> &str;
    /// Its name, for people reading logs and the audit.
    fn name(&self) -> &str;
    /// The policy's view of it, for `[match]`.
    fn info(&self) -> ContainerInfo;
    fn as_any(&self) -> &dyn Any;
}

/// Where a caller runs, as the platform attested it for one request.
#[derive(Debug, Clone, Default)]
pub enum Attestation {
    /// Not in a container (or in the broker's own).
    #[default]
    Host,
    /// A running container, as inspected for this request.
    Container(Arc<dyn Evidence>),
    /// In a container the platform cannot vouch for; `reason` says why.
    /// Released nothing (`isolation.unverified`).
    Unverified { id: String, reason: String },
}

impl Attestation {
    /// The policy's view of the container, for `[match]`.
    pub fn container_info(&self) -> Option<ContainerInfo> {
        self.evidence().map(|e| e.info())
    }

    pub fn evidence(&self) -> Option<&Arc<dyn Evidence>> {
        match self {
            Attestation::Container(e) => Some(e),
            _ => None,
        }
    }
}

/// Facts about a pinned caller that a platform may keep for the life of
/// its connection: the container ids its cgroup names (only root moves a
/// process between cgroups, and a pinned process cannot be replaced under
/// its pid). Read once, it saves a `/proc` read per request.
#[derive(Debug, Default)]
pub struct ConnectionMemo {
    pub cgroup_ids: OnceLock<Vec<String>>,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A container as a platform would describe it, for the core's tests.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct Fake {
        pub id: String,
        pub name: String,
    }

    impl Evidence for Fake {
        fn id(&self) -> &str {
            &self.id
        }
        fn name(&self) -> &str {
            &self.name
        }
        fn info(&self) -> ContainerInfo {
            ContainerInfo {
                id: self.id.clone(),
                labels: Default::default(),
                image_id: String::new(),
            }
        }
        fn as_any(&self) -> &dyn Any {
            self
        }
    }
}
