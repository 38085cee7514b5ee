//! `service_config`: see `tandem::fuzzing::service_config`, which `cargo test` also runs
//! over `fuzz/corpus/service_config/` and `fuzz/regressions/service_config/`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem::fuzzing::service_config(data));
