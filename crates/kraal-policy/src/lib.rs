//! kraal-policy: a pod's annotations, turned into a typed [`PodPolicy`].
//!
//! Pure: no I/O, no other kraal crate. The input is untrusted (anything a user can put in a
//! pod's metadata), so nothing here may panic; every rejection is a [`PolicyError`] that
//! names the annotation key, its value, what is wrong and the form that was expected.
//!
//! The schema is DESIGN.md §4:
//!
//! | key | value |
//! |---|---|
//! | `kraal.dev/bind-ports`, `kraal.dev/connect-ports` | `20000-20999,8080` or `auto:<count>` |
//! | `kubernetes.io/egress-bandwidth`, `kubernetes.io/ingress-bandwidth` | bits/s, `100M` |
//! | `kraal.dev/egress-bandwidth`, `kraal.dev/ingress-bandwidth` | `min=50M,max=200M[,burst=64Ki]` |
//! | `kraal.dev/qos-class` | `online` \| `offline` |
//! | `kraal.dev/cpu-burst[.<container>]` | CPU quantity, `500m` |
//! | `kraal.dev/cpu-period[.<container>]` | duration, `50ms` (1ms..=1s) |
//! | `kraal.dev/memory-high[.<container>]` | bytes, `512Mi` |
//!
//! ```
//! use std::collections::HashMap;
//! use kraal_policy::{PodPolicy, PolicyOptions};
//!
//! let annotations = HashMap::from([
//!     ("kraal.dev/bind-ports".to_string(), "20000-20999".to_string()),
//!     ("kraal.dev/cpu-burst.web".to_string(), "500m".to_string()),
//! ]);
//! let policy = PodPolicy::from_annotations(&annotations, &PolicyOptions::default())?;
//! assert_eq!(policy.for_container("web").cpu_burst_millicores(), Some(500));
//! assert_eq!(policy.for_container("sidecar").cpu_burst_millicores(), None);
//! # Ok::<(), kraal_policy::PolicyError>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]
// Untrusted input in a long-running daemon: no panicking shortcuts outside tests.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented,
        clippy::indexing_slicing,
        clippy::string_slice,
        clippy::arithmetic_side_effects
    )
)]

mod bandwidth;
mod container;
mod duration;
mod error;
pub mod keys;
mod parse;
mod plan;
mod policy;
mod pool;
mod ports;
mod quantity;

pub use bandwidth::{BandwidthError, BandwidthPolicy, Rates};
pub use container::{ContainerLimits, ContainerPolicy, ContainerSettings, Setting};
pub use duration::{DurationError, parse_duration};
pub use error::{PolicyError, Problem};
pub use plan::{
    ContainerPlan, CriResources, OFFLINE_CPU_SHARES, OFFLINE_OOM_SCORE_ADJ,
    ONLINE_MAX_OOM_SCORE_ADJ, Planned, PodPlan,
};
pub use policy::{PodPolicy, PolicyOptions, QosClass};
pub use pool::allocate_block;
pub use ports::{MAX_PORT_RANGES, PortList, PortListError, PortRange, PortSpec};
pub use quantity::{Quantity, QuantityError};
