//! Large futures boxed where they are made.

use std::future::Future;
use std::pin::Pin;

/// `Box::pin(make())`, with the future written straight into its box. A future is as large as
/// its largest state, and `Box::pin` of one made on the stack copies all of it (2.4 KB for a
/// request's exchange) even when it has only just been made and holds nothing but its
/// arguments. Taking the box first lets the compiler make the future in it.
#[inline(always)]
pub fn boxed<F: Future>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
}
