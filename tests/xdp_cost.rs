//! The XDP program's own cost per packet, by path, measured in the kernel with
//! BPF_PROG_TEST_RUN (the kernel runs it `REPEAT` times and reports the mean): what bounds the
//! packets one core can classify, whatever the NIC or veth in front. Run by
//! `cargo xtask bench --only T9-cost`; prints one JSON line per path. Needs root.

use gateway_e2e::xdp::{ACK, Program, SYN, XDP_DROP, XDP_PASS, ethernet, ipv4, tcp};

const REPEAT: u32 = 1_000_000;

fn main() {
    let Some(mut program) = Program::load() else {
        std::process::exit(1);
    };
    program.listener(
        0,
        "198.51.100.10:80",
        &["10.0.0.0/8"],
        Some((1_000_000, 1_000_000)),
    );
    program.listener(1, "198.51.100.11:80", &["10.0.0.0/8"], Some((1, 1)));
    let frame = |source: &str, destination: &str, flags: u8| {
        ethernet(
            &[],
            0x0800,
            &ipv4(source, destination, 6, 0, 0, &tcp(80, flags)),
        )
    };
    // (the name the bench records, the frame, the action it must get)
    let paths = [
        ("other_pass", frame("10.1.2.3", "192.0.2.1", ACK), XDP_PASS),
        (
            "established_pass",
            frame("10.1.2.3", "198.51.100.10", ACK),
            XDP_PASS,
        ),
        (
            "denied_drop",
            frame("192.0.2.9", "198.51.100.10", SYN),
            XDP_DROP,
        ),
        (
            "syn_in_budget_pass",
            frame("10.1.2.3", "198.51.100.10", SYN),
            XDP_PASS,
        ),
        (
            "syn_over_budget_drop",
            frame("10.1.2.3", "198.51.100.11", SYN),
            XDP_DROP,
        ),
    ];
    for (path, frame, expected) in paths {
        // The budget of listener 1 is spent by its first packet: the timed runs are drops.
        program.run(&frame);
        assert_eq!(program.run(&frame), expected, "{path}");
        let time = program.time_per_run(&frame, REPEAT);
        println!(
            "{{\"path\": \"{path}\", \"ns_per_packet\": {}}}",
            time.as_nanos()
        );
    }
}
