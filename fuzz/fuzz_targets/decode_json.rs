#![no_main]
// See farcall_fuzz::decode_json for the input layout and the properties checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| farcall_fuzz::decode_json(data));
