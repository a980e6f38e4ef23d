//! Request mirroring (Gateway API's `RequestMirror`): a copy of a share of a route's requests
//! goes to another backend, and its answer is thrown away.

use std::sync::Arc;

use crate::snapshot::Backend;

/// Where copies go, and which share of the requests is copied.
#[derive(Clone, Debug)]
pub struct Mirror {
    pub backend: Arc<Backend>,
    /// `numerator / denominator` of the requests (`percent` is `n / 100`).
    pub numerator: u32,
    pub denominator: u32,
}

impl Mirror {
    /// Whether this request is one of the share that is copied.
    pub fn chosen(&self) -> bool {
        self.numerator >= self.denominator
            || crate::random::below(u64::from(self.denominator)) < u64::from(self.numerator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_copied_follows_the_fraction() {
        let backend = Arc::new(Backend::new("ns", "mirror", "80", Vec::new()));
        let share = |numerator, denominator| {
            let mirror = Mirror {
                backend: backend.clone(),
                numerator,
                denominator,
            };
            (0..10_000).filter(|_| mirror.chosen()).count()
        };
        assert_eq!(share(1, 1), 10_000);
        assert_eq!(share(0, 100), 0);
        let half = share(50, 100);
        assert!((4_500..5_500).contains(&half), "{half}");
    }
}
