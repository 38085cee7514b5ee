//! `raft_frame`: see `tandem::fuzzing::raft_frame`, which `cargo test` also runs
//! over `fuzz/corpus/raft_frame/` and `fuzz/regressions/raft_frame/`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem::fuzzing::raft_frame(data));
