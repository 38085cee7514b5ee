//! `dhcp_decode_handle`: see `tandem::fuzzing::dhcp_decode_handle`, which `cargo test` also runs
//! over `fuzz/corpus/dhcp_decode_handle/` and `fuzz/regressions/dhcp_decode_handle/`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem::fuzzing::dhcp_decode_handle(data));
