//! Who is calling: turn a connection into a [`Caller`] the policy can judge.
//! One module per kind of evidence: the socket's peer (`unix`), the
//! kernel's namespaces and cgroups (`kernel`, for the container platforms),
//! service-account tokens (`token`). The container a caller runs in comes
//! from the platform ([`crate::platform`]) and adds to the same `Caller`.

pub mod container;
pub mod kernel;
pub mod token;
pub mod unix;

pub use unbaked_policy::Caller;
