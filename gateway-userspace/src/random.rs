//! Fast non-cryptographic randomness for choices on the request path (request ids, the two
//! endpoints of a power-of-two-choices pick, canary weights): SplitMix64 per thread, seeded from
//! the OS-randomized hasher keys.

use std::cell::Cell;
use std::hash::{BuildHasher, RandomState};

thread_local! {
    static STATE: Cell<u64> = Cell::new(RandomState::new().hash_one(std::thread::current().id()));
}

/// The next number of this thread's generator.
pub fn next_u64() -> u64 {
    STATE.with(|state| {
        let next = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        state.set(next);
        let mut z = next;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

/// A number in `0..bound` (`bound` > 0).
pub fn below(bound: u64) -> u64 {
    // Lemire's multiply-shift: no division, bias below 2^-32 for the bounds used here.
    ((u128::from(next_u64()) * u128::from(bound)) >> 64) as u64
}
