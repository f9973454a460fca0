//! `Attach`: checks the container is running and returns a single-use URL of the streaming
//! server, where the client is then connected to the container's stdio through its monitor
//! (`crate::streaming::attach`).

use kraal_api::runtime::v1 as cri;
use kraal_stream::AttachRequest;
use tonic::Status;

use crate::runtime::Runtime;
use crate::streaming::{StreamServer, running_container, status_of};

pub fn attach(
    runtime: &Runtime,
    streams: &StreamServer,
    request: cri::AttachRequest,
) -> Result<cri::AttachResponse, Status> {
    let record = running_container(runtime, "Attach", &request.container_id)?;
    let url = streams
        .get_attach_url(AttachRequest {
            container_id: record.id,
            tty: request.tty,
            stdin: request.stdin,
            stdout: request.stdout,
            stderr: request.stderr,
        })
        .map_err(|e| status_of("Attach", e))?;
    Ok(cri::AttachResponse { url })
}
