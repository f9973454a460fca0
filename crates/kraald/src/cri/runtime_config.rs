//! `RuntimeConfig`: kubelet asks which cgroup driver to use so both agree on cgroup paths.

use kraal_api::runtime::v1::{
    CgroupDriver, LinuxRuntimeConfiguration, RuntimeConfigRequest, RuntimeConfigResponse,
};

use crate::config;
use crate::runtime::Runtime;

/// The driver in force (kraald stops at start when the configured one cannot be had).
pub fn runtime_config(runtime: &Runtime, _request: RuntimeConfigRequest) -> RuntimeConfigResponse {
    let driver = match runtime.driver.kind() {
        config::CgroupDriver::Cgroupfs => CgroupDriver::Cgroupfs,
        config::CgroupDriver::Systemd => CgroupDriver::Systemd,
    };
    RuntimeConfigResponse {
        linux: Some(LinuxRuntimeConfiguration {
            cgroup_driver: driver as i32,
        }),
    }
}
