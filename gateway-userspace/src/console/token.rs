//! The console token: who may change routes. Scripts send it as a bearer token; a browser signs
//! in once and gets a session cookie derived from it (the token itself is never stored in the
//! browser), and each form carries a CSRF field derived from it too.

use std::path::Path;

use hyper::header::{self, HeaderMap};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::policy::balance::cookie;

const COOKIE: &str = "gateway_console";

/// The token of `--console-token-file`.
pub struct Token {
    secret: String,
}

/// What a request presented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presented {
    Bearer,
    Cookie,
    Nothing,
}

impl Token {
    /// Reads the token file (surrounding white space ignored); a short token is refused.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading the console token {}: {e}", path.display()))?;
        let secret = text.trim().to_string();
        if secret.len() < 16 {
            anyhow::bail!(
                "the console token in {} is shorter than 16 characters",
                path.display()
            );
        }
        Ok(Self { secret })
    }

    /// Whether `text` is the token (in constant time).
    pub fn matches(&self, text: &str) -> bool {
        bool::from(text.as_bytes().ct_eq(self.secret.as_bytes()))
    }

    /// What `headers` present: the bearer token or the session cookie, when right.
    pub fn presented(&self, headers: &HeaderMap) -> Presented {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if bearer.is_some_and(|b| self.matches(b.trim())) {
            return Presented::Bearer;
        }
        let session = self.derived("session");
        if cookie(headers, COOKIE)
            .is_some_and(|c| bool::from(c.as_bytes().ct_eq(session.as_bytes())))
        {
            return Presented::Cookie;
        }
        Presented::Nothing
    }

    /// The `Set-Cookie` value of a signed-in browser.
    pub fn cookie(&self) -> String {
        format!(
            "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
            self.derived("session")
        )
    }

    /// The CSRF field of the console's forms.
    pub fn csrf(&self) -> String {
        self.derived("csrf")
    }

    pub fn csrf_matches(&self, field: &str) -> bool {
        bool::from(field.as_bytes().ct_eq(self.csrf().as_bytes()))
    }

    fn derived(&self, purpose: &str) -> String {
        let digest = Sha256::new()
            .chain_update(b"xdp-gateway console ")
            .chain_update(purpose.as_bytes())
            .chain_update(b"\0")
            .chain_update(self.secret.as_bytes())
            .finalize();
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}
