//! UDP datagrams steered by sk_lookup arrive on one socket whatever VIP:port they were sent
//! to: the kernel tells each one's original destination (`IP_ORIGDSTADDR` /
//! `IPV6_ORIGDSTADDR`), and replies go out from a socket bound to that address, so the client
//! hears back from the address it used.

use std::io;
use std::mem::{MaybeUninit, size_of};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Asks the kernel to tell each datagram's original destination.
pub fn enable(socket: &UdpSocket) -> io::Result<()> {
    let v6 = socket.local_addr()?.is_ipv6();
    let (level, option) = match v6 {
        false => (libc::SOL_IP, libc::IP_RECVORIGDSTADDR),
        true => (libc::SOL_IPV6, libc::IPV6_RECVORIGDSTADDR),
    };
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor and a c_int option value of the size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            option,
            (&raw const on).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    match rc {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Receives one datagram into `buffer`: its length, its source, and where it was sent.
pub async fn receive(
    socket: &UdpSocket,
    buffer: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<SocketAddr>)> {
    socket
        .async_io(Interest::READABLE, || {
            recv_with_destination(socket.as_raw_fd(), buffer)
        })
        .await
}

fn recv_with_destination(
    fd: RawFd,
    buffer: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<SocketAddr>)> {
    // SAFETY: all-zero is a valid sockaddr_storage and msghdr.
    let mut source: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut control = [MaybeUninit::<u64>::uninit(); 16];
    let mut iov = libc::iovec {
        iov_base: buffer.as_mut_ptr().cast(),
        iov_len: buffer.len(),
    };
    // SAFETY: as above.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_name = (&raw mut source).cast();
    message.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    message.msg_iov = &raw mut iov;
    message.msg_iovlen = 1;
    message.msg_control = control.as_mut_ptr().cast();
    message.msg_controllen = size_of_val(&control);
    // SAFETY: every pointer in `message` points at a live buffer of the length given.
    let received = unsafe { libc::recvmsg(fd, &raw mut message, 0) };
    if received < 0 {
        return Err(io::Error::last_os_error());
    }
    let from = socket_addr(&source).ok_or_else(|| io::Error::other("datagram without a source"))?;
    let mut destination = None;
    // SAFETY: the kernel filled `msg_controllen` bytes of `control` with well-formed cmsgs;
    // CMSG_FIRSTHDR/CMSG_NXTHDR stay within them, and CMSG_DATA of an ORIGDSTADDR cmsg holds
    // a sockaddr_in or sockaddr_in6, read unaligned.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(&raw const message);
        while !header.is_null() {
            let (level, kind) = ((*header).cmsg_level, (*header).cmsg_type);
            let data = libc::CMSG_DATA(header);
            if level == libc::SOL_IP && kind == libc::IP_ORIGDSTADDR {
                let addr = data.cast::<libc::sockaddr_in>().read_unaligned();
                destination = Some(SocketAddr::V4(v4(&addr)));
            } else if level == libc::SOL_IPV6 && kind == libc::IPV6_ORIGDSTADDR {
                let addr = data.cast::<libc::sockaddr_in6>().read_unaligned();
                destination = Some(SocketAddr::V6(v6(&addr)));
            }
            header = libc::CMSG_NXTHDR(&raw const message, header);
        }
    }
    Ok((received as usize, from, destination))
}

fn socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        // SAFETY: the family says which sockaddr the storage holds; both fit in it.
        libc::AF_INET => Some(SocketAddr::V4(v4(unsafe {
            &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>()
        }))),
        // SAFETY: as above.
        libc::AF_INET6 => Some(SocketAddr::V6(v6(unsafe {
            &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
        }))),
        _ => None,
    }
}

fn v4(addr: &libc::sockaddr_in) -> SocketAddrV4 {
    let ip = Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
    SocketAddrV4::new(ip, u16::from_be(addr.sin_port))
}

fn v6(addr: &libc::sockaddr_in6) -> SocketAddrV6 {
    let ip = Ipv6Addr::from(addr.sin6_addr.s6_addr);
    SocketAddrV6::new(
        ip,
        u16::from_be(addr.sin6_port),
        addr.sin6_flowinfo,
        addr.sin6_scope_id,
    )
}

/// A socket that sends from `address` (a VIP:port that sk_lookup steers, which no socket of
/// the gateway listens on): bound there, with the address reused beside any other socket on
/// it, and free to bind an address the node does not have. It is only sent from: datagrams to
/// `address` still go to the steering socket, since sk_lookup runs before unconnected sockets
/// are looked up.
pub fn reply_socket(address: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    socket.set_reuse_address(true)?;
    let sock = SockRef::from(&socket);
    match address {
        SocketAddr::V4(_) => sock.set_freebind_v4(true)?,
        SocketAddr::V6(_) => sock.set_freebind_v6(true)?,
    }
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    UdpSocket::from_std(socket.into())
}
