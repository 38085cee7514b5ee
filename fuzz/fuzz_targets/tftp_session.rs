//! `tftp_session`: see `tandem::fuzzing::tftp_session`, which `cargo test` also runs
//! over `fuzz/corpus/tftp_session/` and `fuzz/regressions/tftp_session/`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem::fuzzing::tftp_session(data));
