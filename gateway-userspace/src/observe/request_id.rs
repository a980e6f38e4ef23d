//! `X-Request-ID`: the client's (or an outer proxy's) when it sent a usable one, else 32 random
//! hexadecimal digits, as ingress-nginx's `$req_id`.

use hyper::header::{HeaderMap, HeaderName, HeaderValue};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest request id taken from a client; longer ones are replaced.
const MAX_PROPAGATED: usize = 128;

/// The request's id: the one in `headers` if it is short, visible ASCII; otherwise a new one,
/// written into `headers` so that the backend sees the same id as the log.
pub fn request_id(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(id) = headers.get(&X_REQUEST_ID)
        && !id.is_empty()
        && id.len() <= MAX_PROPAGATED
        && id.as_bytes().iter().all(|b| b.is_ascii_graphic())
    {
        return id.clone();
    }
    let id = generate();
    headers.insert(X_REQUEST_ID.clone(), id.clone());
    id
}

fn generate() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let random =
        (u128::from(crate::random::next_u64()) << 64) | u128::from(crate::random::next_u64());
    // Written on the stack: the header value is the only allocation.
    let digits: [u8; 32] = std::array::from_fn(|i| HEX[((random >> (124 - 4 * i)) & 0xf) as usize]);
    HeaderValue::from_bytes(&digits).expect("hex digits are a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_usable_client_id_is_kept_and_others_replaced() {
        let mut headers = HeaderMap::new();
        headers.insert(&X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&mut headers), "abc-123");

        for bad in ["", "has space", &"x".repeat(MAX_PROPAGATED + 1)] {
            let mut headers = HeaderMap::new();
            headers.insert(&X_REQUEST_ID, HeaderValue::from_str(bad).unwrap());
            let id = request_id(&mut headers);
            assert_eq!(id.len(), 32, "{bad:?} replaced by a generated id");
            assert_eq!(headers.get(&X_REQUEST_ID), Some(&id));
        }
    }

    #[test]
    fn generated_ids_are_hex_and_distinct() {
        let ids: std::collections::HashSet<_> = (0..1000)
            .map(|_| request_id(&mut HeaderMap::new()))
            .collect();
        assert_eq!(ids.len(), 1000);
        assert!(
            ids.iter()
                .all(|id| id.len() == 32 && id.as_bytes().iter().all(u8::is_ascii_hexdigit))
        );
    }
}
