//! Rust mirrors of the map layouts in `bpf/ports.h`. Keep both in sync; the size assertions
//! below catch most drift at compile time.

use aya::Pod;

pub(crate) const MAX_SPANS: usize = 16;
pub(crate) const HELD_WORDS: usize = 1024;
pub(crate) const MAX_PODS: u32 = 4096;

pub(crate) const F_BIND: u32 = 1;
pub(crate) const F_CONNECT: u32 = 2;
pub(crate) const F_RANDOM: u32 = 4;
pub(crate) const F_DENY_UNSTEERED: u32 = 8;
pub(crate) const F_COUNT_UNSTEERED: u32 = 16;

pub(crate) const C_BIND_ALLOWED: usize = 0;
pub(crate) const C_BIND_DENIED: usize = 1;
pub(crate) const C_EPHEMERAL: usize = 2;
pub(crate) const C_FAILED: usize = 3;
pub(crate) const C_EXHAUSTED: usize = 4;
pub(crate) const C_UNSTEERED: usize = 5;
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

/// A pod's slot, the slot's generation and its lists: the value of `kp_pods` and of each of
/// the pod's `kp_hook_cfgs` entries.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct KpPod {
    pub slot: u32,
    pub gen_: u32,
    pub cfg: KpCfg,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct KpState {
    pub gen_: u32,
    pub cursor: [u32; 2],
    pub pad: u32,
    pub counters: [u64; C_COUNT],
    pub held: [u64; HELD_WORDS],
}

impl KpState {
    /// A fresh state for the pod of generation `gen_`.
    pub(crate) const fn new(gen_: u32) -> KpState {
        KpState {
            gen_,
            cursor: [0; 2],
            pad: 0,
            counters: [0; C_COUNT],
            held: [0; HELD_WORDS],
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct KpClaim {
    pub cookie: u64,
    /// `KP_OWNER(gen, slot, port)`; 0 when free, all ones while being filled.
    pub owner: u64,
    pub flags: u32,
    pub n_over: u32,
}

impl KpClaim {
    /// The generation and slot of the pod that made the claim.
    pub(crate) fn pod(&self) -> (u32, u32) {
        (
            (self.owner >> 32) as u32,
            ((self.owner >> 16) & 0xffff) as u32,
        )
    }
}

// SAFETY: plain `repr(C)` integers and arrays of them, no padding, valid for any bit pattern.
unsafe impl Pod for KpCfg {}
// SAFETY: as above.
unsafe impl Pod for KpPod {}
// SAFETY: as above.
unsafe impl Pod for KpState {}
// SAFETY: as above.
unsafe impl Pod for KpClaim {}

const _: () = assert!(size_of::<KpCfg>() == 16 + 2 * 4 * MAX_SPANS);
const _: () = assert!(size_of::<KpPod>() == 8 + size_of::<KpCfg>());
const _: () = assert!(size_of::<KpState>() == 16 + 8 * C_COUNT + 8 * HELD_WORDS);
const _: () = assert!(size_of::<KpClaim>() == 24);
