//! Who is calling: turn a connection into a [`Caller`] the policy can judge.
//! One module per kind of evidence; later ones (containers, service-account
//! tokens) add to the same `Caller`.

pub mod docker;
pub mod kernel;
pub mod token;
pub mod unix;

pub use unbaked_policy::Caller;
