#![no_main]
// See farcall_fuzz::decode_farcall for the input layout and the properties checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| farcall_fuzz::decode_farcall(data));
