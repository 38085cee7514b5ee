//! `node_config`: see `tandem::fuzzing::node_config`, which `cargo test` also runs
//! over `fuzz/corpus/node_config/` and `fuzz/regressions/node_config/`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem::fuzzing::node_config(data));
