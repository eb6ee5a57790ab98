/work/main/bench/loadgen/target/release/deps/unbaked_loadgen-d36111f6b0f725ca.d: src/main.rs

/work/main/bench/loadgen/target/release/deps/unbaked_loadgen-d36111f6b0f725ca: src/main.rs

src/main.rs:
