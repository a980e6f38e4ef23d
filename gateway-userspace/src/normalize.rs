//! The one normalisation of request paths, applied before routing, before policy and before
//! forwarding, so that `//admin`, `/./admin`, `/%61dmin` and `/x/../admin` are all `/admin` to
//! every matcher and every path-scoped rule, and the backend receives the path that was matched.
//!
//! The rules, in this order:
//! 1. percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded; other
//!    encodings (`%2F`, `%25`, `%3F`, ...) are kept, their hex digits in upper case;
//! 2. runs of `/` become one (nginx's `merge_slashes on`);
//! 3. `.` segments are removed and `..` segments remove the one before (RFC 3986 5.2.4);
//!    a `..` that would climb above the root is refused.
//!
//! A path that does not start with `/`, has a malformed `%` escape, or climbs above the root is
//! refused with 400.

use std::borrow::Cow;

/// Why a request path was refused (400).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path does not start with \"/\"")]
    NotAbsolute,
    #[error("the path has a malformed percent-encoding")]
    BadEscape,
    #[error("the path climbs above the root with \"..\"")]
    AboveRoot,
}

/// The normalised form of `path` (without its query). Borrowed when nothing changes, which is
/// the common case and costs one scan.
pub fn path(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normal(path.as_bytes()) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path.as_bytes())?;
    let mut out = String::with_capacity(decoded.len());
    // Segments after the leading "/", as the rules above leave them.
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in decoded.split('/').skip(1) {
        trailing_slash = false;
        match segment {
            "" => trailing_slash = true,
            "." => trailing_slash = true,
            ".." => {
                segments.pop().ok_or(PathError::AboveRoot)?;
                trailing_slash = true;
            }
            segment => segments.push(segment),
        }
    }
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || segments.is_empty() {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// Whether `path` is already normal: no `%`, no `//`, no `.` or `..` segment.
fn is_normal(path: &[u8]) -> bool {
    let mut previous = b'/';
    for (i, &byte) in path.iter().enumerate().skip(1) {
        match byte {
            b'%' => return false,
            b'/' if previous == b'/' => return false,
            b'.' if previous == b'/' => {
                let rest = &path[i..];
                if matches!(
                    rest,
                    [b'.'] | [b'.', b'/', ..] | [b'.', b'.'] | [b'.', b'.', b'/', ..]
                ) {
                    return false;
                }
            }
            _ => {}
        }
        previous = byte;
    }
    true
}

/// `path` with `%XX` of unreserved characters decoded and every other escape upper-cased.
fn decode_unreserved(path: &[u8]) -> Result<String, PathError> {
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let byte = path[i];
        if byte != b'%' {
            // The URI parser admits only ASCII here; anything else is kept escaped.
            push_byte(&mut out, byte);
            i += 1;
            continue;
        }
        let (Some(high), Some(low)) = (
            path.get(i + 1).and_then(|b| hex(*b)),
            path.get(i + 2).and_then(|b| hex(*b)),
        ) else {
            return Err(PathError::BadEscape);
        };
        let decoded = high << 4 | low;
        if is_unreserved(decoded) {
            out.push(char::from(decoded));
        } else {
            push_escaped(&mut out, decoded);
        }
        i += 3;
    }
    Ok(out)
}

fn push_byte(out: &mut String, byte: u8) {
    if byte.is_ascii() {
        out.push(char::from(byte));
    } else {
        push_escaped(out, byte);
    }
}

fn push_escaped(out: &mut String, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(byte >> 4)]));
    out.push(char::from(HEX[usize::from(byte & 0xf)]));
}

fn hex(byte: u8) -> Option<u8> {
    char::from(byte).to_digit(16).map(|d| d as u8)
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_walk_arounds_of_the_issue_all_become_the_plain_path() {
        for raw in [
            "/admin",
            "//admin",
            "/./admin",
            "/%61dmin",
            "/x/../admin",
            "/%2e/admin",
            "/x/%2E%2E//admin",
            "///x/./y/../../admin",
        ] {
            assert_eq!(path(raw).as_deref(), Ok("/admin"), "{raw}");
        }
    }

    #[test]
    fn trailing_slashes_and_dot_segments() {
        let cases = [
            ("/", "/"),
            ("/a/", "/a/"),
            ("/a//", "/a/"),
            ("/a/.", "/a/"),
            ("/a/..", "/"),
            ("/a/b/..", "/a/"),
            ("/.", "/"),
            ("/..a/.b/a..", "/..a/.b/a.."),
            ("/a/...", "/a/..."),
        ];
        for (raw, normal) in cases {
            assert_eq!(path(raw).as_deref(), Ok(normal), "{raw}");
        }
    }

    #[test]
    fn reserved_escapes_are_kept_with_upper_case_hex() {
        assert_eq!(path("/a%2fb").as_deref(), Ok("/a%2Fb"));
        assert_eq!(path("/a%2Fb/../c").as_deref(), Ok("/c"));
        assert_eq!(path("/%25%3f%00").as_deref(), Ok("/%25%3F%00"));
        assert_eq!(path("/%7euser").as_deref(), Ok("/~user"));
    }

    #[test]
    fn refusals() {
        assert_eq!(path("/.."), Err(PathError::AboveRoot));
        assert_eq!(path("/a/../.."), Err(PathError::AboveRoot));
        assert_eq!(path("/%2e%2e/etc/passwd"), Err(PathError::AboveRoot));
        assert_eq!(path("/a%2"), Err(PathError::BadEscape));
        assert_eq!(path("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(path("*"), Err(PathError::NotAbsolute));
        assert_eq!(path(""), Err(PathError::NotAbsolute));
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for raw in ["/", "/a/b.c/d", "/.well-known/acme-challenge/x", "/a..b/"] {
            assert!(matches!(path(raw), Ok(Cow::Borrowed(_))), "{raw}");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Ways of writing one segment that all mean it.
        fn obfuscated(segment: &'static str) -> impl Strategy<Value = String> {
            let letters: Vec<_> = segment.chars().collect();
            (
                proptest::collection::vec(any::<bool>(), letters.len()),
                0..3usize,
                any::<bool>(),
            )
                .prop_map(move |(encode, detour, dot)| {
                    let mut out = String::new();
                    // Detours: "/x/.." and "/." before the segment, extra slashes.
                    for _ in 0..detour {
                        out.push_str("/x/../");
                    }
                    if dot {
                        out.push_str("/./");
                    }
                    out.push('/');
                    for (letter, encode) in letters.iter().zip(&encode) {
                        if *encode {
                            out.push_str(&format!("%{:02x}", *letter as u8));
                        } else {
                            out.push(*letter);
                        }
                    }
                    out
                })
        }

        proptest! {
            #[test]
            fn every_spelling_of_a_path_normalises_to_it(
                a in obfuscated("admin"), b in obfuscated("users"), slashes in 1..4usize,
            ) {
                let raw = format!("{a}{}{b}", "/".repeat(slashes - 1));
                let normal = path(&raw);
                prop_assert_eq!(normal.as_deref(), Ok("/admin/users"));
            }

            #[test]
            fn normal_forms_are_fixed_points(raw in "/[a-zA-Z0-9./%~_-]{0,40}") {
                if let Ok(normal) = path(&raw) {
                    let again = path(&normal);
                    prop_assert_eq!(again.as_deref(), Ok(normal.as_ref()));
                    prop_assert!(normal.starts_with('/'));
                    prop_assert!(!normal.contains("//"));
                    prop_assert!(!normal.contains("/./") && !normal.contains("/../"));
                    prop_assert!(!normal.ends_with("/.") && !normal.ends_with("/.."));
                }
            }

            #[test]
            fn any_input_is_answered_without_panicking(raw in ".{0,60}") {
                let _ = path(&raw);
            }
        }
    }
}
