//! `cargo fuzz run names`: see fuzz/README.md and [`pool_resource_fuzz::names`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pool_resource_fuzz::names(data));
