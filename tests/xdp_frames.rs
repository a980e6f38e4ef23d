//! The XDP program on crafted frames (BPF_PROG_TEST_RUN): every header shape it parses, and
//! every shape it must pass untouched. Needs root (CI is root); elsewhere it says it skipped.

use gateway_common::{SourceKey, reason, syn_buckets};
use gateway_e2e::xdp::{
    ACK, Program, SYN, XDP_DROP, XDP_PASS, ethernet, ipv4, ipv6, mapped, tcp, udp, v4_syn,
};

#[test]
fn ipv4_allow_list_with_and_without_options() {
    let Some(mut p) = Program::load() else { return };
    p.listener(0, "198.51.100.10:80", &["10.0.0.0/8"], None);
    assert_eq!(p.run(&v4_syn("10.1.2.3", "198.51.100.10", 80)), XDP_PASS);
    assert_eq!(p.run(&v4_syn("192.0.2.9", "198.51.100.10", 80)), XDP_DROP);
    let with_options = ethernet(
        &[],
        0x0800,
        &ipv4("192.0.2.9", "198.51.100.10", 6, 8, 0, &tcp(80, SYN)),
    );
    assert_eq!(
        p.run(&with_options),
        XDP_DROP,
        "options are skipped to find the TCP header"
    );
    let allowed_options = ethernet(
        &[],
        0x0800,
        &ipv4("10.0.0.1", "198.51.100.10", 6, 40, 0, &tcp(80, ACK)),
    );
    assert_eq!(p.run(&allowed_options), XDP_PASS);
    assert_eq!(p.counted(0, reason::PASSED), 2);
    assert_eq!(p.counted(0, reason::DROPPED_ACL), 2);
}

#[test]
fn vlan_and_qinq_frames_are_classified() {
    let Some(mut p) = Program::load() else { return };
    p.listener(3, "198.51.100.10:443", &["10.0.0.0/8"], None);
    let packet = ipv4("192.0.2.9", "198.51.100.10", 6, 0, 0, &tcp(443, SYN));
    assert_eq!(p.run(&ethernet(&[10], 0x0800, &packet)), XDP_DROP);
    assert_eq!(p.run(&ethernet(&[100, 10], 0x0800, &packet)), XDP_DROP);
    let allowed = ipv4("10.9.9.9", "198.51.100.10", 6, 0, 0, &tcp(443, SYN));
    assert_eq!(p.run(&ethernet(&[10], 0x0800, &allowed)), XDP_PASS);
    assert_eq!(p.counted(3, reason::DROPPED_ACL), 2);
    assert_eq!(p.counted(3, reason::PASSED), 1);
}

#[test]
fn ipv6_is_classified() {
    let Some(mut p) = Program::load() else { return };
    p.listener(1, "[2001:db8::10]:80", &["2001:db8:1::/48"], None);
    let allowed = ethernet(
        &[],
        0x86dd,
        &ipv6("2001:db8:1::5", "2001:db8::10", 6, &tcp(80, SYN)),
    );
    let denied = ethernet(
        &[],
        0x86dd,
        &ipv6("2001:db8:2::5", "2001:db8::10", 6, &tcp(80, SYN)),
    );
    assert_eq!(p.run(&allowed), XDP_PASS);
    assert_eq!(p.run(&denied), XDP_DROP);
    // An IPv4-mapped range does not cover IPv6 sources, nor the other way round.
    p.listener(2, "198.51.100.10:80", &["10.0.0.0/8"], None);
    let v6_source = ethernet(
        &[],
        0x86dd,
        &ipv6("::ffff:10.0.0.1", "2001:db8::10", 6, &tcp(80, SYN)),
    );
    assert_eq!(p.run(&v6_source), XDP_DROP);
}

#[test]
fn what_is_not_for_a_listener_or_not_parsable_passes() {
    let Some(mut p) = Program::load() else { return };
    // Every source is denied: anything wrongly taken for the listener would be dropped.
    p.listener(0, "198.51.100.10:80", &["192.0.2.1/32"], None);
    let other = "203.0.113.7";
    let frames: Vec<(&str, Vec<u8>)> = vec![
        ("another port", v4_syn(other, "198.51.100.10", 81)),
        ("another address", v4_syn(other, "198.51.100.11", 80)),
        (
            "UDP to the listener port",
            ethernet(
                &[],
                0x0800,
                &ipv4(other, "198.51.100.10", 17, 0, 0, &tcp(80, 0)),
            ),
        ),
        (
            "ICMP",
            ethernet(
                &[],
                0x0800,
                &ipv4(other, "198.51.100.10", 1, 0, 0, &[8, 0, 0, 0, 0, 0, 0, 0]),
            ),
        ),
        (
            "a later fragment",
            ethernet(
                &[],
                0x0800,
                &ipv4(other, "198.51.100.10", 6, 0, 0x0010, &tcp(80, SYN)),
            ),
        ),
        (
            "a truncated TCP header",
            ethernet(
                &[],
                0x0800,
                &ipv4(other, "198.51.100.10", 6, 0, 0, &tcp(80, SYN)[..10]),
            ),
        ),
        ("an IHL below 5", {
            let mut packet = ipv4(other, "198.51.100.10", 6, 0, 0, &tcp(80, SYN));
            packet[0] = 0x44;
            ethernet(&[], 0x0800, &packet)
        }),
        ("an IHL past the end", {
            let mut packet = ipv4(other, "198.51.100.10", 6, 0, 0, &tcp(80, SYN)[..4]);
            packet[0] = 0x4f;
            ethernet(&[], 0x0800, &packet)
        }),
        (
            "IPv6 with an extension header",
            ethernet(
                &[],
                0x86dd,
                &ipv6("2001:db8::1", "::ffff:198.51.100.10", 0, &tcp(80, SYN)),
            ),
        ),
        ("ARP", ethernet(&[], 0x0806, &[0u8; 28])),
        ("a bare Ethernet header", ethernet(&[], 0x0800, &[])),
        (
            "a VLAN tag with nothing after it",
            ethernet(&[10], 0x0800, &[]),
        ),
    ];
    for (what, frame) in &frames {
        assert_eq!(p.run(frame), XDP_PASS, "{what}");
    }
    assert_eq!(p.counted(0, reason::DROPPED_ACL), 0);
    assert_eq!(p.slot(reason::OTHER_SLOT), frames.len() as u64);
}

#[test]
fn syn_budget_counts_only_new_connections() {
    let Some(mut p) = Program::load() else { return };
    p.listener(5, "198.51.100.10:80", &[], Some((1, 2)));
    let syn = v4_syn("192.0.2.1", "198.51.100.10", 80);
    let ack = ethernet(
        &[],
        0x0800,
        &ipv4("192.0.2.1", "198.51.100.10", 6, 0, 0, &tcp(80, ACK)),
    );
    let syn_ack = ethernet(
        &[],
        0x0800,
        &ipv4("192.0.2.1", "198.51.100.10", 6, 0, 0, &tcp(80, SYN | ACK)),
    );
    assert_eq!(p.run(&syn), XDP_PASS);
    assert_eq!(p.run(&syn), XDP_PASS);
    assert_eq!(p.run(&syn), XDP_DROP, "the burst of 2 is spent");
    assert_eq!(
        p.run(&ack),
        XDP_PASS,
        "established traffic is never budgeted"
    );
    assert_eq!(p.run(&syn_ack), XDP_PASS);
    assert_eq!(
        p.run(&v4_syn("192.0.2.2", "198.51.100.10", 80)),
        XDP_PASS,
        "another source has its own bucket"
    );
    assert_eq!(p.counted(5, reason::DROPPED_SYN_BUDGET), 1);
    assert_eq!(p.counted(5, reason::PASSED), 5);
}

#[test]
fn a_source_sharing_a_bucket_with_a_flooding_source_still_connects() {
    let Some(mut p) = Program::load() else { return };
    p.listener(6, "198.51.100.10:80", &[], Some((1, 2)));
    let source_key = |ip: &str| SourceKey {
        listener: 6,
        addr: mapped(ip.parse().unwrap()),
    };
    // The tests load the program without a seed (0), so the buckets can be computed here.
    let buckets = |ip: &str| {
        let key = source_key(ip);
        [
            syn_buckets::index(&key, 0),
            syn_buckets::index(&key, syn_buckets::second_seed(0)),
        ]
    };
    let flooder = "192.0.2.1";
    let [first, second] = buckets(flooder);
    assert_ne!(first, second);
    let neighbour = (0..=u32::MAX)
        .map(|n| std::net::Ipv4Addr::from(0x0a00_0000 | (n & 0x00ff_ffff)).to_string())
        .find(|ip| buckets(ip).contains(&first))
        .expect("some 10/8 address shares a bucket");
    assert!(!buckets(&neighbour).contains(&second));

    for _ in 0..2 {
        assert_eq!(p.run(&v4_syn(flooder, "198.51.100.10", 80)), XDP_PASS);
    }
    for _ in 0..5 {
        assert_eq!(
            p.run(&v4_syn(flooder, "198.51.100.10", 80)),
            XDP_DROP,
            "both of the flooding source's buckets are empty"
        );
    }
    assert_eq!(
        p.run(&v4_syn(&neighbour, "198.51.100.10", 80)),
        XDP_PASS,
        "{neighbour} shares one bucket with {flooder} and has its other one"
    );
    assert_eq!(p.counted(6, reason::DROPPED_SYN_BUDGET), 5);
}

#[test]
fn spoofed_sources_cannot_refill_a_flooding_source() {
    let Some(mut p) = Program::load() else { return };
    p.listener(7, "198.51.100.10:80", &[], Some((1, 2)));
    let flooder = v4_syn("192.0.2.1", "198.51.100.10", 80);
    for _ in 0..3 {
        p.run(&flooder);
    }
    assert_eq!(p.counted(7, reason::DROPPED_SYN_BUDGET), 1);
    // More sources than there are buckets, each seen twice (as recently used as the flooding
    // one): a table of sources would have forgotten the flooding one by now, and given it a
    // full budget again.
    for n in 0..(syn_buckets::COUNT + 4096) {
        let spoofed = v4_syn(
            &std::net::Ipv4Addr::from(0x0a00_0000 | n).to_string(),
            "198.51.100.10",
            80,
        );
        p.run(&spoofed);
        p.run(&spoofed);
    }
    assert_eq!(
        p.run(&flooder),
        XDP_DROP,
        "the flooding source is still over its budget"
    );
}

/// One frame the property test below builds: every field the program reads, drawn at random.
#[derive(Debug)]
struct RandomFrame {
    tags: usize,
    v6: bool,
    source: [u8; 16],
    to_listener_address: bool,
    protocol: u8,
    options: usize,
    fragment_offset: u16,
    to_listener_port: bool,
    port: u16,
    flags: u8,
    /// Bytes cut off the end (frames may be truncated anywhere).
    cut: usize,
}

impl RandomFrame {
    fn bytes(&self) -> Vec<u8> {
        let port = if self.to_listener_port { 80 } else { self.port };
        let mut transport = tcp(port, self.flags);
        if self.protocol != 6 {
            transport.truncate(8);
        }
        let packet = if self.v6 {
            let source = std::net::Ipv6Addr::from(self.source).to_string();
            let destination = if self.to_listener_address {
                "2001:db8::10"
            } else {
                "2001:db8::11"
            };
            ipv6(&source, destination, self.protocol, &transport)
        } else {
            let s = self.source;
            let source = std::net::Ipv4Addr::new(s[0], s[1], s[2], s[3]).to_string();
            let destination = if self.to_listener_address {
                "198.51.100.10"
            } else {
                "198.51.100.11"
            };
            ipv4(
                &source,
                destination,
                self.protocol,
                self.options,
                self.fragment_offset,
                &transport,
            )
        };
        let tags = &[100, 10][..self.tags];
        let mut frame = ethernet(tags, if self.v6 { 0x86dd } else { 0x0800 }, &packet);
        frame.truncate(frame.len().saturating_sub(self.cut).max(14));
        frame
    }

    /// Whether the frame is, as built, for the listener (TCP to its address and port).
    fn for_listener(&self) -> bool {
        self.to_listener_address && self.to_listener_port && self.protocol == 6
    }
}

fn random_frame() -> impl proptest::strategy::Strategy<Value = RandomFrame> {
    use proptest::prelude::*;
    (
        (0..3usize, any::<bool>(), any::<[u8; 16]>(), any::<bool>()),
        (
            prop_oneof![Just(6u8), Just(17u8), any::<u8>()],
            (0..11usize).prop_map(|n| n * 4),
        ),
        (
            prop_oneof![Just(0u16), Just(0x2000u16), any::<u16>()],
            any::<bool>(),
            any::<u16>(),
        ),
        (any::<u8>(), prop_oneof![Just(0usize), 0..80usize]),
    )
        .prop_map(
            |(
                (tags, v6, source, to_address),
                (protocol, options),
                (fragment_offset, to_port, port),
                (flags, cut),
            )| {
                RandomFrame {
                    tags,
                    v6,
                    source,
                    to_listener_address: to_address,
                    protocol,
                    options,
                    fragment_offset,
                    to_listener_port: to_port,
                    port,
                    flags,
                    cut,
                }
            },
        )
}

#[test]
fn random_frames_never_abort_and_only_listener_traffic_is_ever_dropped() {
    use proptest::test_runner::{Config, TestRunner};
    let Some(mut p) = Program::load() else { return };
    p.listener(0, "198.51.100.10:80", &["10.0.0.0/8"], Some((1, 1)));
    p.listener(1, "[2001:db8::10]:80", &["2001:db8:1::/48"], Some((1, 1)));
    let mut runner = TestRunner::new(Config {
        cases: 3000,
        ..Config::default()
    });
    runner
        .run(&random_frame(), |frame| {
            let action = p.run(&frame.bytes());
            proptest::prop_assert!(
                action == XDP_PASS || action == XDP_DROP,
                "{frame:?}: {action}"
            );
            if !frame.for_listener() {
                proptest::prop_assert_eq!(action, XDP_PASS, "{:?}", frame);
            }
            Ok(())
        })
        .unwrap();
    // Random bytes as whole frames: the program answers every one.
    runner
        .run(
            &proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            |bytes| {
                let action = p.run(&bytes);
                proptest::prop_assert!(action == XDP_PASS || action == XDP_DROP, "{action}");
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn udp_listeners_are_classified_apart_from_tcp_ones() {
    let Some(mut p) = Program::load() else { return };
    p.udp_listener(4, "198.51.100.10:53", &["10.0.0.0/8"]);
    // A TCP listener on the same port with a SYN budget of one: UDP never spends it.
    p.listener(5, "198.51.100.10:53", &[], Some((1, 1)));
    let datagram = |source: &str| {
        ethernet(
            &[],
            0x0800,
            &ipv4(source, "198.51.100.10", 17, 0, 0, &udp(53, b"query")),
        )
    };
    assert_eq!(p.run(&datagram("10.1.2.3")), XDP_PASS);
    assert_eq!(p.run(&datagram("192.0.2.9")), XDP_DROP);
    let v6 = ethernet(
        &[],
        0x86dd,
        &ipv6("2001:db8::1", "::ffff:198.51.100.10", 17, &udp(53, b"q")),
    );
    assert_eq!(
        p.run(&v6),
        XDP_DROP,
        "an IPv6 source outside the IPv4 range"
    );
    assert_eq!(p.counted(4, reason::PASSED), 1);
    assert_eq!(p.counted(4, reason::DROPPED_ACL), 2);
    // TCP to the same address and port is the TCP listener's, with its own budget.
    assert_eq!(p.run(&v4_syn("192.0.2.9", "198.51.100.10", 53)), XDP_PASS);
    assert_eq!(p.run(&v4_syn("192.0.2.9", "198.51.100.10", 53)), XDP_DROP);
    for _ in 0..5 {
        assert_eq!(
            p.run(&datagram("10.1.2.3")),
            XDP_PASS,
            "UDP has no SYN budget"
        );
    }
    assert_eq!(p.counted(5, reason::PASSED), 1);
    assert_eq!(p.counted(5, reason::DROPPED_SYN_BUDGET), 1);
    // A datagram cut before its destination port passes untouched.
    let cut = ethernet(
        &[],
        0x0800,
        &ipv4("192.0.2.9", "198.51.100.10", 17, 0, 0, &udp(53, b"")[..3]),
    );
    assert_eq!(p.run(&cut), XDP_PASS);
    assert_eq!(p.counted(4, reason::DROPPED_ACL), 2);
}
