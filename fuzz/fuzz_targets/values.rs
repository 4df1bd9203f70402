//! `cargo fuzz run values`: see fuzz/README.md and [`pool_resource_fuzz::values`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pool_resource_fuzz::values(data));
