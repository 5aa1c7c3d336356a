#![no_main]
// See farcall_fuzz::zmq_request for the input layout and the properties checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| farcall_fuzz::zmq_request(data));
