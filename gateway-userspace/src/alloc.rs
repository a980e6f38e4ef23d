//! The global allocator: mimalloc, asked for plain blocks where it can ([`Mimalloc`]), and
//! large blocks of their own. Blocks from [`LARGE`] bytes on are mapped from the
//! system on their own and grow in place with mremap(2), as the C library's malloc does; the
//! rest goes to the allocator given. A buffer that grows by doubling (a YAML document's
//! events while serde_yaml reads a large manifest that the manifest reader leaves to it: 30 MB
//! for one Ingress of 10,000 rules) is then never
//! copied into fresh memory at each step, and its pages are faulted in once; a large block is
//! given back to the system as soon as it is freed.

use std::alloc::{GlobalAlloc, Layout};
use std::ptr;

use libmimalloc_sys as mi;

/// The size from which a block is mapped on its own: far above anything a request allocates.
pub const LARGE: usize = 4 << 20;
/// Mapped blocks are page-aligned: larger alignments go to the allocator given.
const PAGE: usize = 4096;

/// `A` for small blocks, mappings of their own for large ones.
pub struct LargeBlocksMapped<A>(pub A);

/// mimalloc, asked for plain blocks wherever their alignment allows. Asked for every block
/// with its alignment (as the mimalloc crate asks), mimalloc 3 serves a block of more than
/// 1 KB whose size is not a power of two by over-allocating on its slow path: five blocks of
/// each HTTP/2 request, 1,200 instructions. Its plain blocks are aligned to 8 bytes at least
/// (its smallest size, of which every size is a multiple), as std's own allocator relies on
/// the C library's malloc for.
pub struct Mimalloc;

/// The alignment every mimalloc block has.
const PLAIN_ALIGN: usize = 8;

/// Whether a plain mimalloc block has the alignment `layout` asks for.
fn plain(layout: Layout) -> bool {
    layout.align() <= PLAIN_ALIGN
}

// SAFETY: each block is allocated and released by mimalloc, with at least its alignment.
unsafe impl GlobalAlloc for Mimalloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: mimalloc's allocation functions take any size and power-of-two alignment.
        unsafe {
            if plain(layout) {
                mi::mi_malloc(layout.size())
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align())
            }
        }
        .cast()
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        unsafe {
            if plain(layout) {
                mi::mi_zalloc(layout.size())
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align())
            }
        }
        .cast()
    }

    unsafe fn dealloc(&self, block: *mut u8, _layout: Layout) {
        // SAFETY: `block` was allocated by mimalloc (the caller's guarantee).
        unsafe { mi::mi_free(block.cast()) }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `block` was allocated by mimalloc with `layout` (the caller's guarantee); the
        // new block keeps its alignment.
        unsafe {
            if plain(layout) {
                mi::mi_realloc(block.cast(), new_size)
            } else {
                mi::mi_realloc_aligned(block.cast(), new_size, layout.align())
            }
        }
        .cast()
    }
}

fn mapped(layout: Layout) -> bool {
    layout.size() >= LARGE && layout.align() <= PAGE
}

fn map(size: usize) -> *mut u8 {
    // SAFETY: a new private anonymous mapping touches no existing memory.
    let block = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if block == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        block.cast()
    }
}

// SAFETY: every block is either the inner allocator's (its layout says so, at allocation and
// at release alike) or a mapping of at least its size, page-aligned, released with its size.
unsafe impl<A: GlobalAlloc> GlobalAlloc for LargeBlocksMapped<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match mapped(layout) {
            true => map(layout.size()),
            // SAFETY: the caller's guarantees, passed on.
            false => unsafe { self.0.alloc(layout) },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match mapped(layout) {
            // A new mapping's pages are zero.
            true => map(layout.size()),
            // SAFETY: the caller's guarantees, passed on.
            false => unsafe { self.0.alloc_zeroed(layout) },
        }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        match mapped(layout) {
            // SAFETY: `block` is a mapping of `layout.size()` bytes made by `map` or `remap`.
            true => unsafe {
                libc::munmap(block.cast(), layout.size());
            },
            // SAFETY: the caller's guarantees, passed on.
            false => unsafe { self.0.dealloc(block, layout) },
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size`, rounded up to the alignment, fits an isize.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (mapped(layout), mapped(new_layout)) {
            // SAFETY: the caller's guarantees, passed on.
            (false, false) => unsafe { self.0.realloc(block, layout, new_size) },
            (true, true) => {
                // SAFETY: `block` is a mapping of `layout.size()` bytes; the kernel moves its
                // pages to the new place if it cannot grow where it is.
                let moved = unsafe {
                    libc::mremap(block.cast(), layout.size(), new_size, libc::MREMAP_MAYMOVE)
                };
                if moved == libc::MAP_FAILED {
                    ptr::null_mut()
                } else {
                    moved.cast()
                }
            }
            // Across the threshold: a new block of the other kind, and a copy.
            _ => {
                // SAFETY: `new_layout` has a non-zero size (the caller's guarantee).
                let moved = unsafe { self.alloc(new_layout) };
                if !moved.is_null() {
                    // SAFETY: both blocks hold at least the smaller size and do not overlap.
                    unsafe {
                        ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                        self.dealloc(block, layout);
                    }
                }
                moved
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mimalloc_blocks_have_their_alignment_and_keep_their_bytes_when_resized() {
        for align in [1, 2, 8, 16, 64, 4096] {
            for size in [1, 7, 24, 1000, 1500, 2680, 16384, 100_000] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: each block is used within its size and released with its layout.
                unsafe {
                    let block = Mimalloc.alloc_zeroed(layout);
                    assert_eq!(block as usize % align, 0, "{layout:?}");
                    let bytes = std::slice::from_raw_parts_mut(block, size);
                    assert!(bytes.iter().all(|b| *b == 0), "{layout:?} zeroed");
                    bytes.fill(0xa5);
                    let grown = Mimalloc.realloc(block, layout, size * 3);
                    assert_eq!(grown as usize % align, 0, "{layout:?} grown");
                    let bytes = std::slice::from_raw_parts(grown, size);
                    assert!(bytes.iter().all(|b| *b == 0xa5), "{layout:?} grown");
                    Mimalloc.dealloc(grown, Layout::from_size_align(size * 3, align).unwrap());
                }
            }
        }
    }

    static LARGE_BLOCKS: LargeBlocksMapped<std::alloc::System> =
        LargeBlocksMapped(std::alloc::System);

    #[test]
    fn blocks_keep_their_bytes_across_the_threshold_both_ways_and_when_remapped() {
        let layout = Layout::from_size_align(1000, 8).unwrap();
        // SAFETY: each block is used within its size and released with its layout.
        unsafe {
            let mut block = LARGE_BLOCKS.alloc(layout);
            let mut size = layout.size();
            for (i, byte) in std::slice::from_raw_parts_mut(block, size)
                .iter_mut()
                .enumerate()
            {
                *byte = i as u8;
            }
            // Small to large, large to larger (remapped), then back under the threshold.
            for new_size in [LARGE + 10, 3 * LARGE + 1, 2000] {
                block = LARGE_BLOCKS.realloc(
                    block,
                    Layout::from_size_align(size, 8).unwrap(),
                    new_size,
                );
                assert!(!block.is_null());
                let bytes = std::slice::from_raw_parts(block, 1000);
                assert!(bytes.iter().enumerate().all(|(i, b)| *b == i as u8));
                size = new_size;
            }
            LARGE_BLOCKS.dealloc(block, Layout::from_size_align(size, 8).unwrap());

            let zeroed = Layout::from_size_align(LARGE, 16).unwrap();
            let block = LARGE_BLOCKS.alloc_zeroed(zeroed);
            assert!(
                std::slice::from_raw_parts(block, LARGE)
                    .iter()
                    .all(|b| *b == 0)
            );
            LARGE_BLOCKS.dealloc(block, zeroed);
        }
    }
}
