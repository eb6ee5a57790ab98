//! Process exit codes of the `unbaked` binary, one meaning each.
//!
//! `unbaked exec` exits with its command's own code once the command runs;
//! these codes apply before that.

/// Success.
pub const OK: i32 = 0;
/// A failure (bad input, I/O, a policy check with errors).
pub const FAILURE: i32 = 1;
/// The command line itself was wrong.
pub const USAGE: i32 = 2;
/// The broker denied the request by policy (or isolation, or audit fail-closed).
pub const DENIED: i32 = 3;
/// The broker, or the store behind it, could not be reached.
pub const UNAVAILABLE: i32 = 4;
/// `unbaked exec`: the command was found but could not be executed.
pub const CANNOT_EXECUTE: i32 = 126;
/// `unbaked exec`: the command was not found.
pub const COMMAND_NOT_FOUND: i32 = 127;
