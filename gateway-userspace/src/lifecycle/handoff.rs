//! Hitless restarts: a new process takes the listening sockets of the running one over a Unix
//! socket, so the kernel's accept queues never close and no connection is refused.
//!
//! The new process connects to `--handoff-socket`, receives the names of every listening socket
//! (one JSON line) with their descriptors (SCM_RIGHTS), starts accepting from them, and writes
//! `READY`. Only then does the old process stop accepting and drain; until then it serves as
//! before, and it keeps serving if the new one goes away without saying READY.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::sockets::Sockets;

/// The most descriptors one hand-off carries (the kernel's SCM_MAX_FD).
const MAX_FDS: usize = 253;
/// How long the new process waits for the old one to send its sockets.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(10);
const READY: &[u8] = b"READY\n";

/// The running process's sockets, received; say [`Predecessor::ready`] once serving them.
pub struct Predecessor {
    stream: UnixStream,
    pub sockets: HashMap<String, OwnedFd>,
}

impl Predecessor {
    /// Tells the old process to stop accepting and drain.
    pub fn ready(mut self) -> std::io::Result<()> {
        self.stream.write_all(READY)
    }
}

/// Asks the process serving `path` for its listening sockets; `None` when no process does.
pub fn receive(path: &Path) -> Result<Option<Predecessor>> {
    let stream = match UnixStream::connect(path) {
        Ok(stream) => stream,
        Err(error)
            if matches!(
                error.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(error) => {
            return Err(error).with_context(|| format!("connecting to {}", path.display()));
        }
    };
    stream.set_read_timeout(Some(RECEIVE_TIMEOUT))?;
    let (mut payload, fds) = receive_fds(&stream).context("receiving the listening sockets")?;
    while !payload.contains(&b'\n') {
        let mut more = [0u8; 4096];
        let read = (&stream).read(&mut more)?;
        if read == 0 {
            bail!("the running process closed the hand-off before sending every socket name");
        }
        payload.extend_from_slice(&more[..read]);
    }
    let line = payload.split(|b| *b == b'\n').next().unwrap_or_default();
    let names: Vec<String> =
        serde_json::from_slice(line).context("the socket names are not a JSON list")?;
    if names.len() != fds.len() {
        bail!(
            "{} socket names but {} descriptors were received",
            names.len(),
            fds.len()
        );
    }
    stream.set_read_timeout(None)?;
    Ok(Some(Predecessor {
        stream,
        sockets: names.into_iter().zip(fds).collect(),
    }))
}

/// Serves hand-off requests at `path` until a new process has taken the sockets and said READY.
pub async fn serve(path: PathBuf, sockets: Arc<Sockets>) -> Result<()> {
    if let Some(folder) = path.parent() {
        std::fs::create_dir_all(folder)
            .with_context(|| format!("creating {}", folder.display()))?;
    }
    // The path of the previous process (if any) is ours now.
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)
        .with_context(|| format!("listening on {}", path.display()))?;
    // Whoever connects gets the listening sockets and makes this process drain: only our own
    // user may (connecting to a Unix socket needs write permission on it).
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .with_context(|| format!("restricting {}", path.display()))?;
    loop {
        let (stream, _) = listener.accept().await?;
        let stream = stream.into_std()?;
        stream.set_nonblocking(false)?;
        let sockets = sockets.clone();
        let outcome = tokio::task::spawn_blocking(move || hand_off(&stream, &sockets)).await?;
        match outcome {
            Ok(()) => return Ok(()),
            Err(error) => tracing::warn!(
                error = format!("{error:#}"),
                "a new process asked for the sockets but did not take over; still serving"
            ),
        }
    }
}

/// Sends every live socket on `stream` and waits for READY.
fn hand_off(stream: &UnixStream, sockets: &Sockets) -> Result<()> {
    let live = sockets.live()?;
    if live.len() > MAX_FDS {
        bail!(
            "{} listening sockets; at most {MAX_FDS} can be handed off",
            live.len()
        );
    }
    let names: Vec<&str> = live.iter().map(|(name, _)| name.as_str()).collect();
    let mut payload = serde_json::to_vec(&names)?;
    payload.push(b'\n');
    let fds: Vec<RawFd> = live.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
    send_fds(stream, &payload, &fds)?;
    tracing::info!(sockets = ?names, "listening sockets handed to a new process; waiting for it to serve");
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    if answer.as_bytes() != READY {
        bail!("the new process ended the hand-off without READY");
    }
    Ok(())
}

/// One `sendmsg`: `payload` with `fds` attached.
fn send_fds(stream: &UnixStream, payload: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE is a size computation.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    let mut control = vec![0u8; space];
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    // SAFETY: a zeroed msghdr is valid; every pointer set below outlives the sendmsg call, and
    // the control buffer has room for one header with `fds`.
    unsafe {
        let mut message: libc::msghdr = std::mem::zeroed();
        message.msg_iov = &mut iov;
        message.msg_iovlen = 1;
        message.msg_control = control.as_mut_ptr().cast();
        message.msg_controllen = space as _;
        let header = libc::CMSG_FIRSTHDR(&message);
        (*header).cmsg_level = libc::SOL_SOCKET;
        (*header).cmsg_type = libc::SCM_RIGHTS;
        (*header).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
        std::ptr::copy_nonoverlapping(
            fds.as_ptr(),
            libc::CMSG_DATA(header).cast::<RawFd>(),
            fds.len(),
        );
        let sent = libc::sendmsg(stream.as_raw_fd(), &message, libc::MSG_NOSIGNAL);
        if sent < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if (sent as usize) < payload.len() {
            // The descriptors went with the first byte; the rest of the names follow.
            (&*stream).write_all(&payload[sent as usize..])?;
        }
    }
    Ok(())
}

/// One `recvmsg`: the bytes that came and the descriptors attached to them.
fn receive_fds(stream: &UnixStream) -> std::io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut buffer = vec![0u8; 64 * 1024];
    // SAFETY: a size computation.
    let space = unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<RawFd>()) as u32) };
    let mut control = vec![0u8; space as usize];
    let mut iov = libc::iovec {
        iov_base: buffer.as_mut_ptr().cast(),
        iov_len: buffer.len(),
    };
    let mut fds = Vec::new();
    // SAFETY: the buffers outlive the call; the kernel writes at most their lengths; each
    // descriptor in an SCM_RIGHTS header is new to this process and owned by nobody else.
    let received = unsafe {
        let mut message: libc::msghdr = std::mem::zeroed();
        message.msg_iov = &mut iov;
        message.msg_iovlen = 1;
        message.msg_control = control.as_mut_ptr().cast();
        message.msg_controllen = control.len() as _;
        let received = libc::recvmsg(stream.as_raw_fd(), &mut message, libc::MSG_CMSG_CLOEXEC);
        if received < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut header = libc::CMSG_FIRSTHDR(&message);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(header).cast::<RawFd>();
                let count = ((*header).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            header = libc::CMSG_NXTHDR(&message, header);
        }
        if message.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(std::io::Error::other(
                "more descriptors than the hand-off can carry",
            ));
        }
        received as usize
    };
    buffer.truncate(received);
    Ok((buffer, fds))
}
