//! The Date header of responses, formatted once a second per thread.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use hyper::header::HeaderValue;

thread_local! {
    static CACHED: RefCell<(u64, HeaderValue)> =
        const { RefCell::new((0, HeaderValue::from_static(""))) };
}

pub fn now() -> HeaderValue {
    let second = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second {
            let format = time::macros::format_description!(
                "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
            );
            let text = time::OffsetDateTime::from_unix_timestamp(second as i64)
                .ok()
                .and_then(|t| t.format(&format).ok())
                .unwrap_or_default();
            *cached = (
                second,
                HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("")),
            );
        }
        cached.1.clone()
    })
}
