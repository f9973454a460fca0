//! The NetworkReady condition of `Status`: true once the conf dir holds a usable network.
//! The directory is read on every call; kubelet asks every few seconds and the read is a
//! handful of small files, so a config that appears (or breaks) shows up at the next Status
//! without a watcher thread to keep alive.

use kraal_api::runtime::v1::RuntimeCondition;
use kraal_net::cni;

use crate::config::Config;

const NETWORK_READY: &str = "NetworkReady";
const NOT_READY: &str = "NetworkPluginNotReady";

pub fn network_condition(config: &Config) -> RuntimeCondition {
    let not_ready = |message: String| RuntimeCondition {
        r#type: NETWORK_READY.to_string(),
        status: false,
        reason: NOT_READY.to_string(),
        message,
    };
    if !config.cni.enabled {
        return not_ready(
            "kraal: CNI is off ([cni] enabled = false in kraald's config); pods get loopback only"
                .to_string(),
        );
    }
    match cni::load_dir(&config.cni.conf_dir) {
        Ok(_) => RuntimeCondition {
            r#type: NETWORK_READY.to_string(),
            status: true,
            reason: String::new(),
            message: String::new(),
        },
        Err(err) => not_ready(format!("kraal: cni config uninitialized: {err}")),
    }
}
