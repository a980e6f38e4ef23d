//! The kernel's coarse monotonic clock (CLOCK_MONOTONIC_COARSE): the time of the last tick,
//! a few milliseconds behind, read without the TSC. Timeouts counted in seconds need no more:
//! the upstream pool's idle ages and an HTTP/2 connection's phases. (The precise clock was
//! read about ten times per request, 1.5% of the T1 profile.)

use std::pin::Pin;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};
use hyper_util::rt::TokioTimer;

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

/// hyper's timer (tokio's sleeps) telling the time by the coarse clock. hyper's HTTP/2
/// keep-alive notes the time of every frame a client sends (its last read, against a ping
/// interval of seconds): two or three precise reads a request otherwise.
#[derive(Clone, Debug, Default)]
pub struct CoarseTimer(TokioTimer);

impl Timer for CoarseTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.0.sleep(duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        self.0.sleep_until(deadline)
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        self.0.reset(sleep, new_deadline);
    }

    /// The coarse time as an `Instant`: both clocks read once, then the coarse one's advance
    /// added to the precise reading (within a tick of `Instant::now()`).
    fn now(&self) -> Instant {
        static ORIGIN: OnceLock<(Instant, Duration)> = OnceLock::new();
        let (precise, coarse) = *ORIGIN.get_or_init(|| (Instant::now(), now()));
        precise + now().saturating_sub(coarse)
    }
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

    #[test]
    fn the_timer_tells_the_time_within_a_tick() {
        let timer = CoarseTimer::default();
        for _ in 0..3 {
            let told = timer.now();
            let precise = Instant::now();
            let apart = precise.max(told) - precise.min(told);
            assert!(apart <= Duration::from_millis(25), "{apart:?} apart");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
