//! `PortForward`: checks the pod is ready and returns a single-use URL of the streaming
//! server; each forwarded connection is then made inside the pod's network namespace
//! (`crate::streaming::port_forward`).

use kraal_api::runtime::v1 as cri;
use kraal_stream::PortForwardRequest;
use tonic::Status;

use crate::runtime::Runtime;
use crate::streaming::{StreamServer, pod_netns, status_of};

pub fn port_forward(
    runtime: &Runtime,
    streams: &StreamServer,
    request: cri::PortForwardRequest,
) -> Result<cri::PortForwardResponse, Status> {
    let record = runtime.sandbox("PortForward", &request.pod_sandbox_id)?;
    pod_netns(runtime, &record.id)?;
    let mut ports = Vec::with_capacity(request.port.len());
    for port in request.port {
        match u16::try_from(port) {
            Ok(p) if p > 0 => ports.push(p),
            _ => {
                return Err(Status::invalid_argument(format!(
                    "PortForward: port {port} is not a TCP port (1-65535)"
                )));
            }
        }
    }
    let url = streams
        .get_port_forward_url(PortForwardRequest {
            pod_sandbox_id: record.id,
            ports,
        })
        .map_err(|e| status_of("PortForward", e))?;
    Ok(cri::PortForwardResponse { url })
}
