//! `RuntimeConfig`: kubelet asks which cgroup driver to use so both agree on cgroup paths.

use kraal_api::runtime::v1::{
    CgroupDriver, LinuxRuntimeConfiguration, RuntimeConfigRequest, RuntimeConfigResponse,
};

use crate::config::{self, Config};

pub fn runtime_config(config: &Config, _request: RuntimeConfigRequest) -> RuntimeConfigResponse {
    let driver = match config.cgroup_driver {
        config::CgroupDriver::Cgroupfs => CgroupDriver::Cgroupfs,
        config::CgroupDriver::Systemd => CgroupDriver::Systemd,
    };
    RuntimeConfigResponse {
        linux: Some(LinuxRuntimeConfiguration {
            cgroup_driver: driver as i32,
        }),
    }
}
