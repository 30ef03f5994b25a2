//! herald's HTTP/1 path and hyper read the same bytes: where herald's path takes a request,
//! hyper must read the same method, target and body; where it refuses one, hyper must not
//! serve it (`herald::http1::differential`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Err(disagreement) = herald::http1::differential::check(bytes) {
        panic!("{disagreement}");
    }
});
