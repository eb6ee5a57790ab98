/work/main/bench/loadgen/target/release/unbaked-loadgen: /work/main/bench/loadgen/src/main.rs
