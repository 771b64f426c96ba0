//! The frame decoders and the frame reader on any input: they must never panic, and no frame
//! they hand on may exceed the frame limit.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    procpool::__fuzz::wire(data);
});
