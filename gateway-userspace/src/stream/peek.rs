//! Looking at a connection's first bytes without taking them (`MSG_PEEK`): the PROXY protocol
//! header and the TLS ClientHello are read this way, so that whoever serves the connection
//! next (rustls, the HTTP server, a backend) reads it from its start with nothing replayed.

use std::fmt::Display;
use std::time::Duration;

use tokio::net::TcpStream;

/// Why the first bytes could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PeekError {
    #[error("{0}")]
    Invalid(String),
    #[error("nothing decisive within {0:?}")]
    TimedOut(Duration),
    #[error("the connection closed first")]
    Closed,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Peeks at up to `max` bytes until `parse` decides (`Ok(Some)`) or refuses them, within
/// `timeout`. Bytes that arrive in pieces are looked at again after a pause that grows to
/// 100 ms, since a peek returns at once while the same bytes wait unread.
pub async fn peek_until<T, E: Display>(
    stream: &TcpStream,
    max: usize,
    timeout: Duration,
    mut parse: impl FnMut(&[u8]) -> Result<Option<T>, E>,
) -> Result<T, PeekError> {
    let looking = async {
        let mut window = vec![0u8; max];
        let mut pause = Duration::from_millis(1);
        loop {
            let seen = stream.peek(&mut window).await?;
            if seen == 0 {
                return Err(PeekError::Closed);
            }
            match parse(&window[..seen]) {
                Ok(Some(decided)) => return Ok(decided),
                Err(reason) => return Err(PeekError::Invalid(reason.to_string())),
                Ok(None) if seen == max => {
                    return Err(PeekError::Invalid(format!(
                        "nothing decisive in {max} bytes"
                    )));
                }
                Ok(None) => {}
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    };
    tokio::time::timeout(timeout, looking)
        .await
        .map_err(|_| PeekError::TimedOut(timeout))?
}
