//! Who may use a route beyond its address: `auth-type: basic` against an htpasswd Secret, and
//! external auth (`auth-url`). Made once per snapshot by `translate`; the request-time steps are
//! in `proxy::auth`.

pub mod basic;
pub mod external;

pub use basic::BasicAuth;
pub use external::ExternalAuth;
