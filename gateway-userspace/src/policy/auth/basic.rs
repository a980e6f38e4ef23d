//! `auth-type: basic`: users and password hashes from an htpasswd Secret (bcrypt, `{SHA}` and
//! Apache's `$apr1$` MD5), checked in constant time. bcrypt is slow by design, so a credential
//! that verified is remembered for a short while, keyed by a salted SHA-256 of the credential
//! (never the credential itself), and the hashing itself runs off the request threads
//! (`proxy::auth`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hyper::header::HeaderValue;
use md5::{Digest, Md5};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// How long a verified credential is accepted without hashing it again.
const REMEMBERED_FOR: Duration = Duration::from_secs(60);
/// Verified credentials remembered at most (per route's Secret).
const MAX_REMEMBERED: usize = 4096;

/// One user's password hash, as htpasswd writes it.
#[derive(Debug, PartialEq, Eq)]
pub enum PasswordHash {
    /// `$2y$`, `$2b$`, `$2a$` (`htpasswd -B`).
    Bcrypt(String),
    /// `{SHA}` and the base64 SHA-1 of the password (`htpasswd -s`).
    Sha1([u8; 20]),
    /// `$apr1$salt$hash` (`htpasswd -m`, its default before bcrypt).
    Apr1 { salt: String, hash: String },
}

impl PasswordHash {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.starts_with("$2y$") || text.starts_with("$2b$") || text.starts_with("$2a$") {
            // `$2y$` and two cost digits, `$`, 53 characters of salt and hash. Checked by form:
            // verifying would cost a bcrypt round per user and snapshot.
            let cost = text.get(4..6).and_then(|c| c.parse::<u32>().ok());
            let valid = text.len() == 60
                && text.as_bytes()[6] == b'$'
                && cost.is_some_and(|c| (4..=31).contains(&c))
                && text[7..].bytes().all(|b| BCRYPT64.contains(&b));
            if !valid {
                return Err("is not a valid bcrypt hash".into());
            }
            return Ok(Self::Bcrypt(text.to_string()));
        }
        if let Some(digest) = text.strip_prefix("{SHA}") {
            let digest = BASE64
                .decode(digest)
                .ok()
                .and_then(|d| <[u8; 20]>::try_from(d).ok())
                .ok_or("is not a valid {SHA} hash (base64 of 20 bytes)")?;
            return Ok(Self::Sha1(digest));
        }
        if let Some(rest) = text.strip_prefix("$apr1$") {
            let (salt, hash) = rest.split_once('$').ok_or("is not a valid $apr1$ hash")?;
            let valid = |s: &str| s.bytes().all(|b| ITOA64.contains(&b));
            if salt.is_empty() || salt.len() > 8 || hash.len() != 22 || !valid(salt) || !valid(hash)
            {
                return Err("is not a valid $apr1$ hash".into());
            }
            return Ok(Self::Apr1 {
                salt: salt.to_string(),
                hash: hash.to_string(),
            });
        }
        Err(
            "is not a supported hash: use bcrypt (htpasswd -B), {SHA} or $apr1$ (crypt, \
             plain text and other schemes are refused)"
                .into(),
        )
    }

    /// Whether `password` has this hash; the comparison takes the same time wherever the
    /// first difference is.
    pub fn matches(&self, password: &[u8]) -> bool {
        match self {
            Self::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            Self::Sha1(digest) => {
                let computed: [u8; 20] = sha1::Sha1::digest(password).into();
                computed.ct_eq(digest).into()
            }
            Self::Apr1 { salt, hash } => apr1(password, salt.as_bytes())
                .as_bytes()
                .ct_eq(hash.as_bytes())
                .into(),
        }
    }

    /// Whether checking this hash is slow (and so must not run on a request thread).
    pub fn is_slow(&self) -> bool {
        matches!(self, Self::Bcrypt(_))
    }
}

/// The users of one route's htpasswd Secret.
#[derive(Debug)]
pub struct BasicAuth {
    /// The `WWW-Authenticate` value of a 401: `Basic realm="..."`.
    pub challenge: HeaderValue,
    users: HashMap<String, PasswordHash>,
    /// Salted digests of credentials that verified, with when they did.
    verified: Mutex<HashMap<[u8; 32], Instant>>,
    /// The salt of those digests, random per Secret and process.
    salt: [u8; 16],
}

/// What the Authorization header of a request offers.
pub struct Offered<'a> {
    user: &'a str,
    password: &'a [u8],
    digest: [u8; 32],
}

impl BasicAuth {
    pub fn new(realm: &str, users: HashMap<String, PasswordHash>) -> Result<Self, String> {
        if users.is_empty() {
            return Err("has no user".into());
        }
        let escaped = realm.replace('\\', "\\\\").replace('"', "\\\"");
        let challenge = HeaderValue::from_str(&format!("Basic realm=\"{escaped}\""))
            .map_err(|_| "the realm is not a valid header value".to_string())?;
        let mut salt = [0; 16];
        crate::tls::provider()
            .secure_random
            .fill(&mut salt)
            .map_err(|_| "no randomness for the credential cache".to_string())?;
        Ok(Self {
            challenge,
            users,
            verified: Mutex::default(),
            salt,
        })
    }

    /// Whether `other` has the same realm and users (then `other`, with the credentials it
    /// remembers, is kept across snapshots).
    pub fn same_as(&self, other: &BasicAuth) -> bool {
        self.challenge == other.challenge && self.users == other.users
    }

    /// Decodes `Basic base64(user:password)` (`decoded` holds the bytes); `None` when the header
    /// is not a well-formed Basic credential.
    pub fn offered<'a>(
        &self,
        header: &HeaderValue,
        decoded: &'a mut Vec<u8>,
    ) -> Option<Offered<'a>> {
        let value = header.as_bytes();
        let scheme_end = value.iter().position(|b| *b == b' ')?;
        if !value[..scheme_end].eq_ignore_ascii_case(b"basic") {
            return None;
        }
        let encoded = value[scheme_end..].trim_ascii();
        *decoded = BASE64.decode(encoded).ok()?;
        let digest = Sha256::new()
            .chain_update(self.salt)
            .chain_update(&decoded[..])
            .finalize()
            .into();
        let colon = decoded.iter().position(|b| *b == b':')?;
        let (user, password) = decoded.split_at(colon);
        Some(Offered {
            user: std::str::from_utf8(user).ok()?,
            password: &password[1..],
            digest,
        })
    }

    /// Whether `offered` verified a short while ago (no hashing needed).
    pub fn remembers(&self, offered: &Offered<'_>) -> bool {
        let verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        verified
            .get(&offered.digest)
            .is_some_and(|at| at.elapsed() < REMEMBERED_FOR)
    }

    /// Whether checking `offered` is slow (bcrypt).
    pub fn is_slow(&self, offered: &Offered<'_>) -> bool {
        self.hash_for(offered.user).is_slow()
    }

    /// Checks `offered` against its user's hash, and remembers it when it verifies. An unknown
    /// user is checked against another user's hash, so that the time taken does not tell
    /// whether a user exists.
    pub fn verify(&self, offered: &Offered<'_>) -> bool {
        let known = self.users.contains_key(offered.user);
        let ok = self.hash_for(offered.user).matches(offered.password) && known;
        if ok {
            let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            if verified.len() >= MAX_REMEMBERED {
                verified.retain(|_, at| at.elapsed() < REMEMBERED_FOR);
            }
            if verified.len() < MAX_REMEMBERED {
                verified.insert(offered.digest, Instant::now());
            }
        }
        ok
    }

    fn hash_for(&self, user: &str) -> &PasswordHash {
        self.users
            .get(user)
            .or_else(|| self.users.values().next())
            .expect("a BasicAuth has users")
    }
}

/// Reads an htpasswd file (`auth-secret-type: auth-file`): `user:hash` lines; blank lines and
/// `#` comments are skipped. A line that does not parse is an error naming its number.
pub fn htpasswd(text: &str) -> Result<HashMap<String, PasswordHash>, String> {
    let mut users = HashMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (user, hash) = line
            .split_once(':')
            .ok_or_else(|| format!("line {}: expected user:hash", number + 1))?;
        user_entry(user, hash, &mut users).map_err(|e| format!("line {}: {e}", number + 1))?;
    }
    Ok(users)
}

/// Adds one user (`auth-file` lines and `auth-map` keys share the checks).
pub fn user_entry(
    user: &str,
    hash: &str,
    users: &mut HashMap<String, PasswordHash>,
) -> Result<(), String> {
    if user.is_empty() || user.contains(':') || user.chars().any(char::is_control) {
        return Err(format!("user {user:?} is not a valid user name"));
    }
    let hash =
        PasswordHash::parse(hash.trim()).map_err(|e| format!("user {user:?}: the hash {e}"))?;
    if users.insert(user.to_string(), hash).is_some() {
        return Err(format!("user {user:?} appears twice"));
    }
    Ok(())
}

/// bcrypt's base64 alphabet.
const BCRYPT64: &[u8; 64] = b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// The alphabet of crypt(3) hashes.
const ITOA64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Apache's MD5 crypt (`$apr1$`), the 22 characters after the salt.
fn apr1(password: &[u8], salt: &[u8]) -> String {
    const MAGIC: &[u8] = b"$apr1$";
    let alternate = Md5::new()
        .chain_update(password)
        .chain_update(salt)
        .chain_update(password)
        .finalize();
    let mut context = Md5::new()
        .chain_update(password)
        .chain_update(MAGIC)
        .chain_update(salt);
    let mut left = password.len();
    while left > 0 {
        let n = left.min(16);
        context.update(&alternate[..n]);
        left -= n;
    }
    let mut bits = password.len();
    while bits > 0 {
        if bits & 1 == 1 {
            context.update([0u8]);
        } else {
            context.update(&password[..1]);
        }
        bits >>= 1;
    }
    let mut digest = context.finalize();
    for round in 0..1000 {
        let mut context = Md5::new();
        if round & 1 == 1 {
            context.update(password);
        } else {
            context.update(digest);
        }
        if round % 3 != 0 {
            context.update(salt);
        }
        if round % 7 != 0 {
            context.update(password);
        }
        if round & 1 == 1 {
            context.update(digest);
        } else {
            context.update(password);
        }
        digest = context.finalize();
    }
    let d = digest;
    let mut out = String::with_capacity(22);
    let mut push = |value: u32, count: usize| {
        let mut value = value;
        for _ in 0..count {
            out.push(ITOA64[(value & 0x3f) as usize] as char);
            value >>= 6;
        }
    };
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        push(
            (u32::from(d[a]) << 16) | (u32::from(d[b]) << 8) | u32::from(d[c]),
            4,
        );
    }
    push(u32::from(d[11]), 2);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made with `openssl passwd -apr1 -salt S1t2Y3z4 secret` and the base64 SHA-1 of "secret".
    const APR1: &str = "$apr1$S1t2Y3z4$3y9iwmVX5fbIS751PfHe/0";
    const SHA: &str = "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=";

    fn auth(users: &str) -> BasicAuth {
        BasicAuth::new("Team \"A\"", htpasswd(users).unwrap()).unwrap()
    }

    fn header(user: &str, password: &str) -> HeaderValue {
        let encoded = BASE64.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {encoded}")).unwrap()
    }

    fn check(auth: &BasicAuth, user: &str, password: &str) -> bool {
        let mut decoded = Vec::new();
        let header = header(user, password);
        let offered = auth.offered(&header, &mut decoded).unwrap();
        auth.verify(&offered)
    }

    #[test]
    fn each_hash_scheme_verifies_its_password_only() {
        let bcrypt = bcrypt::hash_with_salt("secret", 4, [7; 16])
            .unwrap()
            .format_for_version(bcrypt::Version::TwoY);
        let users = format!("# team\nann:{APR1}\n\nbob:{SHA}\ncy:{bcrypt}\n");
        let auth = auth(&users);
        for user in ["ann", "bob", "cy"] {
            assert!(check(&auth, user, "secret"), "{user}");
            assert!(!check(&auth, user, "Secret"), "{user}");
            assert!(!check(&auth, user, ""), "{user}");
        }
        assert!(
            !check(&auth, "dan", "secret"),
            "an unknown user with another's password"
        );
        assert_eq!(auth.challenge, "Basic realm=\"Team \\\"A\\\"\"");
    }

    #[test]
    fn a_verified_credential_is_remembered_by_digest() {
        let auth = auth(&format!("bob:{SHA}"));
        let mut decoded = Vec::new();
        let good = header("bob", "secret");
        let offered = auth.offered(&good, &mut decoded).unwrap();
        assert!(!auth.remembers(&offered));
        assert!(auth.verify(&offered));
        assert!(auth.remembers(&offered));
        let mut other = Vec::new();
        let bad = header("bob", "wrong");
        let offered = auth.offered(&bad, &mut other).unwrap();
        assert!(!auth.verify(&offered));
        assert!(!auth.remembers(&offered));
    }

    #[test]
    fn malformed_credentials_are_not_offered() {
        let auth = auth(&format!("bob:{SHA}"));
        let mut decoded = Vec::new();
        for value in ["Bearer abc", "Basic", "Basic !!!", "Basic Ym9i"] {
            let header = HeaderValue::from_static(value);
            assert!(auth.offered(&header, &mut decoded).is_none(), "{value}");
        }
    }

    #[test]
    fn bad_files_name_the_line_and_the_reason() {
        assert_eq!(
            htpasswd("ann:plain").unwrap_err().split(':').next(),
            Some("line 1")
        );
        let error = htpasswd(&format!("ann:{SHA}\nann:{SHA}")).unwrap_err();
        assert!(
            error.contains("line 2") && error.contains("twice"),
            "{error}"
        );
        let error = htpasswd("bob:$apr1$x$short").unwrap_err();
        assert!(error.contains("$apr1$"), "{error}");
        assert!(htpasswd("no-colon").unwrap_err().contains("user:hash"));
        let error = htpasswd("cy:$2y$99$abc").unwrap_err();
        assert!(error.contains("bcrypt"), "{error}");
        assert!(BasicAuth::new("", HashMap::new()).is_err());
    }
}
