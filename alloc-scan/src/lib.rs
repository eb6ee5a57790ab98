//! Nothing to link: this package exists for `tests/freed_buffers.rs`, which
//! installs a scanning global allocator (the workspace's one `unsafe`) to
//! check that every buffer that held a secret is zeroized before it is
//! freed, across a round trip through the real client and server code.
#![forbid(unsafe_code)]
