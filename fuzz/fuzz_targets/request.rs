//! `cargo fuzz run request`: see fuzz/README.md and [`pool_resource_fuzz::request`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pool_resource_fuzz::request(data));
