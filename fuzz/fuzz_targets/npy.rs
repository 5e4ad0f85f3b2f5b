#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| qtune_fuzz::fuzz_npy(data));
