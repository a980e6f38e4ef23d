//! The gateway's XDP program. For now it only counts what it sees and passes everything on;
//! classification by VIP/port, allow-lists and SYN budgets build on this entry point.
#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action, macros::map, macros::xdp, maps::PerCpuArray, programs::XdpContext};
use gateway_common::{Counters, stat};

#[map(name = "STATS")]
static STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(stat::COUNT, 0);

#[xdp]
pub fn gateway_xdp(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    if let Some(slot) = STATS.get_ptr_mut(stat::SEEN) {
        // SAFETY: the pointer comes from the map lookup and is this CPU's own slot.
        unsafe {
            (*slot).packets += 1;
            (*slot).bytes += len;
        }
    }
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
