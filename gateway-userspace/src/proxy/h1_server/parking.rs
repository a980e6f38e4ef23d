//! Keep-alive connections that stay idle are parked (nginx's way: an idle connection costs its
//! socket and little else). The connection's task ends; its socket waits in an epoll set of the
//! lot's own, and the lot keeps its addresses, its place under the connection limits and its
//! keep-alive deadline. Bytes (or a close) from the client wake it into a new task; the
//! keep-alive timeout and the drain's stop close it where it lies.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::proxy::limits::OpenConnection;

/// How long a connection waits for its next request in its own task before it is parked:
/// long against the gaps of a client sending requests back to back (they never pay the move),
/// short against the keep-alive timeout.
pub const PARK_AFTER: Duration = Duration::from_secs(1);
/// Wake-ups taken from the epoll set at once.
const WAKE_BATCH: usize = 64;

/// A parked connection.
pub struct Parked {
    pub stream: std::net::TcpStream,
    pub client: SocketAddr,
    pub listener: SocketAddr,
    pub open: OpenConnection,
}

/// The parked connections.
pub struct ParkingLot {
    epoll: AsyncFd<OwnedFd>,
    lot: Mutex<Lot>,
    parked_gauge: Gauge,
}

#[derive(Default)]
struct Lot {
    next_ticket: u64,
    parked: HashMap<u64, Parked>,
    /// Tickets by deadline. Parking order is deadline order: every connection is parked the
    /// same time after its last response and closes the same time after it.
    deadlines: VecDeque<(Instant, u64)>,
}

impl ParkingLot {
    /// An empty lot; `parked_gauge` counts what it holds.
    pub fn new(parked_gauge: Gauge) -> io::Result<Self> {
        // SAFETY: epoll_create1 has no preconditions; a valid result is a new descriptor owned here.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and nothing else owns it; the OwnedFd that the AsyncFd
        // owns keeps it open for the AsyncFd's lifetime.
        let epoll = unsafe {
            AsyncFd::register_with_interest(OwnedFd::from_raw_fd(fd), Interest::READABLE)?
        };
        Ok(Self {
            epoll,
            lot: Mutex::default(),
            parked_gauge,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Lot> {
        self.lot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Parks an idle connection until the client sends or `deadline` passes. A connection that
    /// cannot be parked is closed (it was idle: nothing is lost but its keep-alive).
    pub fn park(
        &self,
        stream: TcpStream,
        client: SocketAddr,
        listener: SocketAddr,
        open: OpenConnection,
        deadline: Instant,
    ) -> io::Result<()> {
        // Out of the runtime's reactor: the lot's epoll set is the one place it waits in.
        let stream = stream.into_std()?;
        let mut lot = self.lock();
        let ticket = lot.next_ticket;
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLONESHOT) as u32,
            u64: ticket,
        };
        // SAFETY: both descriptors are open for the duration of the call; `event` is valid.
        let added = unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                stream.as_raw_fd(),
                &mut event,
            )
        };
        if added < 0 {
            return Err(io::Error::last_os_error());
        }
        lot.next_ticket += 1;
        let parked = Parked {
            stream,
            client,
            listener,
            open,
        };
        lot.parked.insert(ticket, parked);
        lot.deadlines.push_back((deadline, ticket));
        self.parked_gauge.inc();
        Ok(())
    }

    /// How many connections were ever parked.
    pub fn parked_in_all(&self) -> u64 {
        self.lock().next_ticket
    }

    /// Waits until clients send on (or close) parked connections, and takes those out.
    pub async fn woken(&self) -> io::Result<Vec<Parked>> {
        loop {
            let mut ready = self.epoll.readable().await?;
            let mut events = [libc::epoll_event { events: 0, u64: 0 }; WAKE_BATCH];
            // SAFETY: `events` has room for WAKE_BATCH entries; a zero timeout never blocks.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    WAKE_BATCH as i32,
                    0,
                )
            };
            if n < 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error);
            }
            let n = n as usize;
            if n < WAKE_BATCH {
                ready.clear_ready();
            }
            if n == 0 {
                continue;
            }
            let mut lot = self.lock();
            let woken: Vec<Parked> = events[..n]
                .iter()
                .filter_map(|event| lot.parked.remove(&{ event.u64 }))
                .collect();
            drop(lot);
            for parked in &woken {
                self.unregister(parked);
            }
            return Ok(woken);
        }
    }

    /// Takes out the connections whose keep-alive deadline has passed.
    pub fn expired(&self, now: Instant) -> Vec<Parked> {
        let mut lot = self.lock();
        let mut expired = Vec::new();
        while let Some(&(deadline, ticket)) = lot.deadlines.front() {
            if deadline > now {
                break;
            }
            lot.deadlines.pop_front();
            // Gone already when it was woken.
            if let Some(parked) = lot.parked.remove(&ticket) {
                expired.push(parked);
            }
        }
        drop(lot);
        for parked in &expired {
            self.unregister(parked);
        }
        expired
    }

    /// Takes out every parked connection (the drain stops).
    pub fn take_all(&self) -> Vec<Parked> {
        let mut lot = self.lock();
        lot.deadlines.clear();
        let all: Vec<Parked> = lot.parked.drain().map(|(_, parked)| parked).collect();
        drop(lot);
        for parked in &all {
            self.unregister(parked);
        }
        all
    }

    fn unregister(&self, parked: &Parked) {
        self.parked_gauge.dec();
        // SAFETY: both descriptors are open; a null event is allowed for EPOLL_CTL_DEL.
        unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                parked.stream.as_raw_fd(),
                std::ptr::null_mut(),
            );
        }
    }
}
