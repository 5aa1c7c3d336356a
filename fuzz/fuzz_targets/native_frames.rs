#![no_main]
// See farcall_fuzz::native_frames for the input layout and the properties checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| farcall_fuzz::native_frames(data));
