//! Rust mirrors of the map layouts in `bpf/ports.h`. Keep both in sync; the size assertions
//! below catch most drift at compile time.

use aya::Pod;

pub(crate) const MAX_SPANS: usize = 16;
pub(crate) const HELD_WORDS: usize = 1024;

pub(crate) const F_BIND: u32 = 1;
pub(crate) const F_CONNECT: u32 = 2;
pub(crate) const F_RANDOM: u32 = 4;

pub(crate) const C_BIND_ALLOWED: usize = 0;
pub(crate) const C_BIND_DENIED: usize = 1;
pub(crate) const C_EPHEMERAL: usize = 2;
pub(crate) const C_FAILED: usize = 3;
pub(crate) const C_EXHAUSTED: usize = 4;
pub(crate) const C_COUNT: usize = 8;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct KpSpan {
    pub lo: u16,
    pub hi: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct KpCfg {
    pub flags: u32,
    pub n_bind: u16,
    pub n_conn: u16,
    pub bind_total: u32,
    pub conn_total: u32,
    pub bind: [KpSpan; MAX_SPANS],
    pub conn: [KpSpan; MAX_SPANS],
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct KpState {
    pub cursor: [u32; 2],
    pub counters: [u64; C_COUNT],
    pub held: [u64; HELD_WORDS],
}

impl KpState {
    pub(crate) const ZERO: KpState = KpState {
        cursor: [0; 2],
        counters: [0; C_COUNT],
        held: [0; HELD_WORDS],
    };
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct KpPodref {
    pub pod_id: u64,
}

// SAFETY: plain `repr(C)` integers and arrays of them, no padding, valid for any bit pattern.
unsafe impl Pod for KpCfg {}
// SAFETY: as above.
unsafe impl Pod for KpState {}
// SAFETY: as above.
unsafe impl Pod for KpPodref {}

const _: () = assert!(size_of::<KpCfg>() == 16 + 2 * 4 * MAX_SPANS);
const _: () = assert!(size_of::<KpState>() == 8 + 8 * C_COUNT + 8 * HELD_WORDS);
const _: () = assert!(size_of::<KpPodref>() == 8);
