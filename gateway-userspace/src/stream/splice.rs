//! Bytes moved socket to socket inside the kernel: splice(2) from the source socket into a
//! pipe, and from the pipe into the destination socket, never copied through userspace. Pipes
//! are pooled, so a short connection costs no more system calls than a copy would.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::Interest;
use tokio::net::TcpStream;

/// The most bytes one splice asks for: a pipe's default capacity (16 pages).
const CHUNK: usize = 64 * 1024;
/// Empty pipes kept for the next sessions.
const POOL: usize = 256;

/// A pipe, empty whenever it is not in use.
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

static PIPES: Mutex<Vec<Pipe>> = Mutex::new(Vec::new());

impl Pipe {
    /// A pipe from the pool, or a new one.
    pub fn take() -> io::Result<Pipe> {
        if let Some(pipe) = PIPES.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(pipe);
        }
        let mut fds = [0 as RawFd; 2];
        // SAFETY: pipe2 writes two descriptors into the array it is given.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(Pipe { read, write })
    }

    /// Back to the pool; only an empty pipe may be given back (one that still holds bytes
    /// of a broken session is closed).
    pub fn give_back(self, empty: bool) {
        let mut pool = PIPES.lock().unwrap_or_else(|e| e.into_inner());
        if empty && pool.len() < POOL {
            pool.push(self);
        }
    }
}

/// Moves everything `from` sends to `to` until `from` finishes sending, then half-closes `to`
/// (its peer reads the end of the stream, and may still send). Counts the bytes in `moved`
/// and calls `activity` whenever bytes move. The pipe is empty again when this returns `Ok`.
pub async fn one_way(
    from: &TcpStream,
    to: &TcpStream,
    pipe: &Pipe,
    moved: &AtomicU64,
    activity: impl Fn(),
) -> io::Result<()> {
    loop {
        let filled = from
            .async_io(Interest::READABLE, || {
                splice(from.as_raw_fd(), pipe.write.as_raw_fd(), CHUNK)
            })
            .await?;
        if filled == 0 {
            return socket2::SockRef::from(to).shutdown(std::net::Shutdown::Write);
        }
        let mut left = filled;
        while left > 0 {
            left -= to
                .async_io(Interest::WRITABLE, || {
                    splice(pipe.read.as_raw_fd(), to.as_raw_fd(), left)
                })
                .await?;
        }
        moved.fetch_add(filled as u64, Ordering::Relaxed);
        activity();
    }
}

fn splice(from: RawFd, to: RawFd, length: usize) -> io::Result<usize> {
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    // SAFETY: both descriptors are open for the call; null offsets are what sockets and
    // pipes take.
    let spliced = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            length,
            flags,
        )
    };
    match spliced {
        n if n >= 0 => Ok(n as usize),
        _ => Err(io::Error::last_os_error()),
    }
}
