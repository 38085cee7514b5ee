//! `tftp_packet`: see `tandem::fuzzing::tftp_packet`, which `cargo test` also runs
//! over `fuzz/corpus/tftp_packet/` and `fuzz/regressions/tftp_packet/`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem::fuzzing::tftp_packet(data));
