//! Heap bytes per registered unit in the VLR at 100,000 units (target: at most 512).
//! Run: `cargo bench --bench vlr_memory`. Counts every allocation through a wrapping
//! global allocator, so the figure includes the hash tables' spare capacity.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use trunkd::protocol::{FleetId, Imsi, SiteId, TalkgroupId, Tmsi};
use trunkd::vlr::{Affiliation, Vlr, VlrUnit};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn main() {
    const UNITS: usize = 100_000;
    let imsis: Vec<Imsi> = (0..UNITS)
        .map(|i| Imsi::parse(&format!("00101{i:010}")).unwrap())
        .collect();
    let before = LIVE.load(Ordering::SeqCst);
    let vlr = Vlr::new();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for (i, imsi) in imsis.iter().enumerate() {
        let unit = VlrUnit {
            tmsi: Tmsi::new(1).unwrap(),
            site: SiteId::new((i % 100 + 1) as u16).unwrap(),
            fleet: FleetId::new((i / 1000 + 1) as u16).unwrap(),
            affiliation: Affiliation {
                primary: TalkgroupId::new(1).unwrap(),
                secondary: [TalkgroupId::new(2), None, None],
            },
            last_activity_ms: 0,
            ck: [0; 16],
            ik: [0; 16],
        };
        vlr.register(
            *imsi,
            unit,
            || {
                // xorshift: spread TMSIs over the whole range, as the OS CSPRNG does.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                Tmsi::new(state as u32)
            },
            |_, _| Ok::<(), ()>(()),
        )
        .unwrap();
    }
    let after = LIVE.load(Ordering::SeqCst);
    assert_eq!(vlr.len(), UNITS);
    let per_unit = (after - before) as f64 / UNITS as f64;
    println!(
        "VLR: {UNITS} units, {} bytes of heap, {per_unit:.0} bytes per unit",
        after - before
    );
    println!(
        "(entry value: {} bytes, key: {} bytes)",
        std::mem::size_of::<VlrUnit>(),
        std::mem::size_of::<Imsi>()
    );
}
