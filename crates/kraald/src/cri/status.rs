//! `Status`: the runtime and network conditions kubelet gates pod starts on.

use std::collections::HashMap;

use kraal_api::runtime::v1::{
    RuntimeCondition, RuntimeHandler, RuntimeHandlerFeatures, RuntimeStatus, StatusRequest,
    StatusResponse,
};

use crate::runtime::Runtime;

const RUNTIME_READY: &str = "RuntimeReady";

pub fn status(kraal: &Runtime, request: StatusRequest) -> StatusResponse {
    let config = &kraal.config;
    let runtime = RuntimeCondition {
        r#type: RUNTIME_READY.to_string(),
        status: true,
        reason: String::new(),
        message: String::new(),
    };
    // Until the conf dir holds a usable network, kubelet runs hostNetwork pods only.
    let network = crate::network::network_condition(config);
    let mut info = HashMap::new();
    if request.verbose {
        let config_json = serde_json::to_string(config).unwrap_or_else(|err| format!("{err}"));
        info.insert("config".to_string(), config_json);
        // The node's hierarchy, driver and kernel features, and the kraal features they
        // rule out (with the reason): `kraalctl cri node` shows them.
        let node_json = serde_json::to_string(&kraal.node).unwrap_or_else(|err| format!("{err}"));
        info.insert("node".to_string(), node_json);
    }
    StatusResponse {
        status: Some(RuntimeStatus {
            conditions: vec![runtime, network],
        }),
        info,
        runtime_handlers: vec![RuntimeHandler {
            name: String::new(),
            features: Some(RuntimeHandlerFeatures {
                recursive_read_only_mounts: false,
                user_namespaces: false,
            }),
        }],
        features: None,
    }
}
