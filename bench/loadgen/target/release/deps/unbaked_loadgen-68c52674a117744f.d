/work/main/bench/loadgen/target/release/deps/unbaked_loadgen-68c52674a117744f.d: /work/main/clippy.toml src/main.rs Cargo.toml

/work/main/bench/loadgen/target/release/deps/libunbaked_loadgen-68c52674a117744f.rmeta: /work/main/clippy.toml src/main.rs Cargo.toml

/work/main/clippy.toml:
src/main.rs:
Cargo.toml:

# env-dep:CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__
# env-dep:CLIPPY_CONF_DIR
