//! QUIC connections across a hitless restart. The old and the new process read the same UDP
//! socket, where a datagram reaches either; QUIC connection state lives in one of them only.
//! So every process marks the connection IDs it issues with a tag of its own (their first
//! byte; the next process takes the one after), and a datagram whose connection ID carries the
//! other process's tag is relayed to it over a Unix datagram socket pair handed over with the
//! UDP socket. Once handed over, the old process reads only what is relayed to it and still
//! sends on the shared socket: its connections finish their requests and drain (GOAWAY)
//! instead of breaking. Initial and 0-RTT packets carry a connection ID the client chose and
//! are never relayed: new connections go to whichever process reads them, which after the
//! hand-off is the new one only.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use quinn::udp::{EcnCodepoint, RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, ConnectionId, ConnectionIdGenerator, UdpPoller};
use tokio::io::ReadBuf;
use tokio::net::UnixDatagram;

/// Length of the connection IDs the gateway issues: the tag and seven random bytes.
const CID_LEN: usize = 8;
/// A relayed datagram's header: the client's address (family, address, port), the address it
/// was sent to (family or 0, address) and its ECN bits.
const HEADER: usize = 1 + 16 + 2 + 1 + 16 + 1;
/// The largest relayed message: a header and a UDP payload.
const MAX_MESSAGE: usize = HEADER + 65_535;

/// The relays of one process's QUIC socket to its predecessor and successor.
pub struct Relay {
    /// This process's connection ID tag.
    tag: u8,
    /// The previous process (tag - 1), while it drains.
    predecessor: Mutex<Option<Arc<Channel>>>,
    /// The next process (tag + 1), from the hand-off on.
    successor: Mutex<Option<Arc<Channel>>>,
    /// Handed over: the shared socket is the next process's to read.
    handed_over: AtomicBool,
    /// Where a relayed message is read before its datagram goes to the endpoint's buffer
    /// (allocated on the first one).
    scratch: Mutex<Vec<u8>>,
}

impl fmt::Debug for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Relay").field("tag", &self.tag).finish()
    }
}

/// The connection ID tag of a process: one after its predecessor's, read from the first
/// message of an inherited relay channel (`predecessor_tag`), else random.
pub fn process_tag(predecessor_tag: Option<u8>) -> u8 {
    predecessor_tag.map_or_else(|| random_bytes::<1>()[0], |tag| tag.wrapping_add(1))
}

/// The predecessor's tag, the first message its relay channel `fd` carries (sent before the
/// channel was handed over, so it is there already).
pub fn read_tag(fd: &OwnedFd) -> Option<u8> {
    let channel = std::os::unix::net::UnixDatagram::from(fd.try_clone().ok()?);
    channel.set_nonblocking(true).ok()?;
    let mut tag = [0u8; 1];
    match channel.recv(&mut tag) {
        Ok(1) => Some(tag[0]),
        _ => None,
    }
}

impl Relay {
    /// The relay of a QUIC socket of the process tagged `tag`, with the channel to the
    /// predecessor it inherited (if any).
    pub fn new(tag: u8, predecessor: Option<OwnedFd>) -> io::Result<Arc<Self>> {
        let predecessor = predecessor.map(channel).transpose()?;
        Ok(Arc::new(Self {
            tag,
            predecessor: Mutex::new(predecessor),
            successor: Mutex::default(),
            handed_over: AtomicBool::new(false),
            scratch: Mutex::default(),
        }))
    }

    /// A channel to the next process: its end, to hand over, carries this process's tag as
    /// its first message.
    pub fn successor_channel(&self) -> io::Result<OwnedFd> {
        let (ours, theirs) = std::os::unix::net::UnixDatagram::pair()?;
        ours.send(&[self.tag])?;
        *lock(&self.successor) = Some(channel(ours.into())?);
        Ok(theirs.into())
    }

    /// The next process reads the shared socket from now on; this one reads what it relays.
    pub fn hand_over(&self) {
        if lock(&self.successor).is_some() {
            self.handed_over.store(true, Ordering::Release);
        }
    }

    /// Connection IDs tagged with this process's tag, for the endpoint's configuration.
    pub fn cid_generator(
        &self,
    ) -> impl Fn() -> Box<dyn ConnectionIdGenerator> + Send + Sync + use<> {
        let tag = self.tag;
        move || Box::new(TaggedCids { tag })
    }

    /// The neighbour that owns `packet`'s connection, if another process does.
    fn owner(&self, packet: &[u8]) -> Option<Arc<Channel>> {
        let tag = destination_tag(packet)?;
        let neighbour = match tag {
            tag if tag == self.tag => return None,
            tag if tag == self.tag.wrapping_sub(1) => &self.predecessor,
            tag if tag == self.tag.wrapping_add(1) => &self.successor,
            _ => return None,
        };
        lock(neighbour).clone()
    }

    /// Sends `packet` to `neighbour` with what the endpoint needs to know about it. A full
    /// channel drops it (as the network may); a closed one is forgotten (its process ended).
    fn relay(&self, neighbour: &Arc<Channel>, meta: &RecvMeta, packet: &[u8]) {
        let mut message = Vec::with_capacity(HEADER + packet.len());
        encode_header(meta, &mut message);
        message.extend_from_slice(packet);
        match neighbour.send.send(&message) {
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => self.forget(neighbour),
        }
    }

    fn forget(&self, neighbour: &Arc<Channel>) {
        for slot in [&self.predecessor, &self.successor] {
            let mut slot = lock(slot);
            if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, neighbour)) {
                *slot = None;
            }
        }
    }

    /// A datagram a neighbour relayed, into `buf` and `meta`.
    fn poll_relayed(
        &self,
        cx: &mut Context,
        buf: &mut IoSliceMut<'_>,
        meta: &mut RecvMeta,
    ) -> Poll<()> {
        let neighbours = [&self.predecessor, &self.successor].map(|slot| lock(slot).clone());
        let mut scratch = lock(&self.scratch);
        scratch.resize(MAX_MESSAGE, 0);
        for neighbour in neighbours.iter().flatten() {
            // Until the channel is empty (which registers the waker) or a datagram fits.
            loop {
                let mut read = ReadBuf::new(&mut scratch);
                match neighbour.receive.poll_recv(cx, &mut read) {
                    Poll::Pending => break,
                    Poll::Ready(Err(_)) => {
                        self.forget(neighbour);
                        break;
                    }
                    Poll::Ready(Ok(())) => {
                        if let Some((header, packet)) = decode_header(read.filled())
                            && packet.len() <= buf.len()
                        {
                            buf[..packet.len()].copy_from_slice(packet);
                            *meta = RecvMeta {
                                len: packet.len(),
                                stride: packet.len(),
                                ..header
                            };
                            return Poll::Ready(());
                        }
                    }
                }
            }
        }
        Poll::Pending
    }

    /// Relays the datagrams of `meta[..count]` that belong to a neighbour, keeping this
    /// process's own in place (a batch of segments stays a batch: only the last may be short).
    fn keep_own(&self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta], count: usize) {
        for (buf, meta) in bufs.iter_mut().zip(meta.iter_mut()).take(count) {
            let stride = meta.stride.max(1);
            let (mut read, mut kept) = (0, 0);
            while read < meta.len {
                let end = (read + stride).min(meta.len);
                match self.owner(&buf[read..end]) {
                    Some(neighbour) => self.relay(&neighbour, meta, &buf[read..end]),
                    None => {
                        if kept != read {
                            buf.copy_within(read..end, kept);
                        }
                        kept += end - read;
                    }
                }
                read = end;
            }
            meta.len = kept;
        }
    }
}

/// The tag of the connection ID a packet is sent to, when it is one of the gateway's: short
/// header packets, and long header ones other than Initial and 0-RTT (whose connection ID the
/// client chose). Version negotiation and Retry only go to clients.
fn destination_tag(packet: &[u8]) -> Option<u8> {
    let first = *packet.first()?;
    if first & 0x80 == 0 {
        return (packet.len() > CID_LEN).then(|| packet[1]);
    }
    let long_type = (first >> 4) & 0b11;
    let version = packet.get(1..5)?;
    if version == [0; 4] || long_type <= 1 || usize::from(*packet.get(5)?) != CID_LEN {
        return None;
    }
    packet.get(6).copied()
}

/// The QUIC socket of an endpoint: the shared UDP socket, with datagrams of the neighbours'
/// connections relayed to them and theirs relayed to this one.
#[derive(Debug)]
pub struct RelayedSocket {
    socket: Arc<dyn AsyncUdpSocket>,
    relay: Arc<Relay>,
}

impl RelayedSocket {
    pub fn new(socket: Arc<dyn AsyncUdpSocket>, relay: Arc<Relay>) -> Self {
        Self { socket, relay }
    }
}

impl AsyncUdpSocket for RelayedSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.socket.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        self.socket.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        if let Poll::Ready(()) = self.relay.poll_relayed(cx, &mut bufs[0], &mut meta[0]) {
            return Poll::Ready(Ok(1));
        }
        if self.relay.handed_over.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        let count = std::task::ready!(self.socket.poll_recv(cx, bufs, meta))?;
        // Datagrams relayed away leave an empty entry, which the endpoint skips.
        self.relay.keep_own(bufs, meta, count);
        Poll::Ready(Ok(count))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.socket.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.socket.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.socket.may_fragment()
    }
}

/// Connection IDs of eight bytes: the process's tag, then seven random ones.
struct TaggedCids {
    tag: u8,
}

impl ConnectionIdGenerator for TaggedCids {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut id = random_bytes::<CID_LEN>();
        id[0] = self.tag;
        ConnectionId::new(&id)
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<std::time::Duration> {
        None
    }
}

/// Bytes from the TLS library's secure random source (connection IDs must not be guessable).
fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut bytes)
        .expect("the system's secure random source");
    bytes
}

/// One end of a relay channel between two processes.
struct Channel {
    /// Read when the runtime says it is readable.
    receive: UnixDatagram,
    /// Written at once, without waiting for the runtime to learn of the socket's readiness
    /// (a channel is used as soon as it is made); a full channel drops the datagram.
    send: std::os::unix::net::UnixDatagram,
}

fn channel(fd: OwnedFd) -> io::Result<Arc<Channel>> {
    let channel = std::os::unix::net::UnixDatagram::from(fd);
    channel.set_nonblocking(true)?;
    Ok(Arc::new(Channel {
        send: channel.try_clone()?,
        receive: UnixDatagram::from_std(channel)?,
    }))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn encode_header(meta: &RecvMeta, out: &mut Vec<u8>) {
    let address = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => (4u8, v4.to_ipv6_mapped().octets()),
        IpAddr::V6(v6) => (6u8, v6.octets()),
    };
    let (family, ip) = address(meta.addr.ip());
    out.push(family);
    out.extend_from_slice(&ip);
    out.extend_from_slice(&meta.addr.port().to_be_bytes());
    let (family, ip) = meta.dst_ip.map_or((0, [0; 16]), address);
    out.push(family);
    out.extend_from_slice(&ip);
    out.push(meta.ecn.map_or(0, |ecn| ecn as u8));
}

/// The header of a relayed message (its lengths left to the caller) and its datagram.
fn decode_header(message: &[u8]) -> Option<(RecvMeta, &[u8])> {
    let (header, packet) = (message.get(..HEADER)?, &message[HEADER..]);
    let address = |family: u8, bytes: &[u8]| -> Option<IpAddr> {
        let v6 = Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?);
        match family {
            4 => Some(IpAddr::V4(v6.to_ipv4_mapped()?)),
            6 => Some(IpAddr::V6(v6)),
            _ => None,
        }
    };
    let client = address(header[0], &header[1..17])?;
    let port = u16::from_be_bytes([header[17], header[18]]);
    let meta = RecvMeta {
        addr: SocketAddr::new(client, port),
        dst_ip: address(header[19], &header[20..36]),
        ecn: EcnCodepoint::from_bits(header[36]),
        ..RecvMeta::default()
    };
    Some((meta, packet))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short_header(tag: u8) -> Vec<u8> {
        let mut packet = vec![0x40, tag];
        packet.extend_from_slice(&[7; CID_LEN - 1]);
        packet.extend_from_slice(&[0; 20]);
        packet
    }

    fn long_header(long_type: u8, tag: u8) -> Vec<u8> {
        let mut packet = vec![0xc0 | (long_type << 4), 0, 0, 0, 1, CID_LEN as u8, tag];
        packet.extend_from_slice(&[7; CID_LEN - 1 + 20]);
        packet
    }

    #[test]
    fn only_connection_ids_the_gateway_issued_carry_a_tag() {
        assert_eq!(destination_tag(&short_header(9)), Some(9));
        assert_eq!(destination_tag(&long_header(2, 9)), Some(9), "Handshake");
        assert_eq!(destination_tag(&long_header(0, 9)), None, "Initial");
        assert_eq!(destination_tag(&long_header(1, 9)), None, "0-RTT");
        let mut negotiation = long_header(2, 9);
        negotiation[1..5].copy_from_slice(&[0; 4]);
        assert_eq!(destination_tag(&negotiation), None);
        let mut other_length = long_header(2, 9);
        other_length[5] = 20;
        assert_eq!(destination_tag(&other_length), None);
        assert_eq!(destination_tag(&[0x40, 9]), None, "too short");
        assert_eq!(destination_tag(&[]), None);
    }

    #[test]
    fn generated_ids_carry_the_tag_and_differ() {
        let relay = Relay::new(process_tag(Some(41)), None).unwrap_or_else(|_| unreachable!());
        let generate = relay.cid_generator();
        let (a, b) = (generate().generate_cid(), generate().generate_cid());
        assert_eq!((a[0], b[0], a.len()), (42, 42, CID_LEN));
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn a_batch_keeps_its_own_datagrams_and_relays_the_successors() {
        let old = Relay::new(5, None).unwrap();
        let channel = old.successor_channel().unwrap();
        let tag = read_tag(&channel);
        let new = Relay::new(process_tag(tag), Some(channel)).unwrap();
        assert_eq!(new.tag, 6);
        // Three segments of one GRO batch, the last one short: old's, new's, old's.
        let (own, theirs, own_short) = (short_header(5), short_header(6), short_header(5));
        let stride = own.len();
        let mut data = [
            own.clone(),
            theirs.clone(),
            own_short[..stride - 7].to_vec(),
        ]
        .concat();
        let meta = RecvMeta {
            addr: "198.51.100.7:50000".parse().unwrap(),
            len: data.len(),
            stride,
            ..RecvMeta::default()
        };
        let mut bufs = [IoSliceMut::new(&mut data)];
        let mut metas = [meta];
        old.keep_own(&mut bufs, &mut metas, 1);
        assert_eq!(metas[0].len, 2 * stride - 7);
        assert_eq!(bufs[0][..stride], own[..]);
        assert_eq!(bufs[0][stride..2 * stride - 7], own_short[..stride - 7]);

        let mut received = vec![0u8; 1500];
        let mut buf = IoSliceMut::new(&mut received);
        let mut relayed = RecvMeta::default();
        std::future::poll_fn(|cx| new.poll_relayed(cx, &mut buf, &mut relayed)).await;
        assert_eq!((relayed.addr, relayed.len), (meta.addr, theirs.len()));
        assert_eq!(received[..theirs.len()], theirs[..]);
    }

    #[test]
    fn headers_keep_addresses_and_ecn() {
        for (client, destination) in [
            ("198.51.100.7:50000", Some("198.51.100.1")),
            ("[2001:db8::7]:443", Some("2001:db8::1")),
            ("198.51.100.7:1", None),
        ] {
            let meta = RecvMeta {
                addr: client.parse().unwrap(),
                dst_ip: destination.map(|d| d.parse().unwrap()),
                ecn: Some(EcnCodepoint::Ce),
                ..RecvMeta::default()
            };
            let mut message = Vec::new();
            encode_header(&meta, &mut message);
            message.extend_from_slice(b"packet");
            let (decoded, packet) = decode_header(&message).unwrap();
            assert_eq!((decoded.addr, decoded.dst_ip), (meta.addr, meta.dst_ip));
            assert_eq!(decoded.ecn, Some(EcnCodepoint::Ce));
            assert_eq!(packet, b"packet");
        }
    }
}
