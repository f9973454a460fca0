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
    // Whether the container's stdio is a terminal was fixed when it was created (kubelet
    // copies it from the container spec). A terminal attach to a container without one would
    // have nothing to resize and would lose stderr, which a terminal attach cannot carry.
    // The other way round is fine: the terminal's output arrives as plain stdout.
    if request.tty && !record.tty {
        return Err(Status::invalid_argument(format!(
            "Attach: container {} was created without a tty; attach with tty=false",
            record.id
        )));
    }
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
