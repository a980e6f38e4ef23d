//! The kernel's coarse monotonic clock (CLOCK_MONOTONIC_COARSE): the time of the last tick,
//! a few milliseconds behind, read without the TSC. Timeouts counted in seconds need no more:
//! the upstream pool's idle ages and an HTTP/2 connection's phases. (The precise clock was
//! read about ten times per request, 1.5% of the T1 profile.)

use std::time::Duration;

/// Time since an arbitrary start (boot), to the kernel's tick.
pub fn now() -> Duration {
    let mut time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `time` is a valid timespec to write; the clock exists on every Linux since 2.6.32,
    // and with a valid clock and pointer clock_gettime cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut time) };
    Duration::new(time.tv_sec as u64, time.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_moves_forward_with_the_precise_clock() {
        let precise = std::time::Instant::now();
        let start = now();
        std::thread::sleep(Duration::from_millis(50));
        let moved = now() - start;
        // The coarse clock lags by at most a tick (4 ms at HZ=250, 10 ms at HZ=100).
        assert!(moved >= Duration::from_millis(30), "moved {moved:?}");
        assert!(
            moved <= precise.elapsed() + Duration::from_millis(10),
            "moved {moved:?}"
        );
    }
}
