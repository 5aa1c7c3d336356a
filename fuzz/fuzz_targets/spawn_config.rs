#![no_main]
// See farcall_fuzz::spawn_config for the input layout and the properties checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| farcall_fuzz::spawn_config(data));
