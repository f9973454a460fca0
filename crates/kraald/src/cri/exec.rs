//! `Exec`: checks the container can take an exec now and returns a single-use URL of the
//! streaming server, where the client then runs the command (`crate::streaming::exec`).

use kraal_api::runtime::v1 as cri;
use kraal_stream::ExecRequest;
use tonic::Status;

use crate::runtime::Runtime;
use crate::streaming::{StreamServer, running_container, status_of};

pub fn exec(
    runtime: &Runtime,
    streams: &StreamServer,
    request: cri::ExecRequest,
) -> Result<cri::ExecResponse, Status> {
    if request.cmd.is_empty() {
        return Err(Status::invalid_argument("Exec: cmd must not be empty"));
    }
    let record = running_container(runtime, "Exec", &request.container_id)?;
    let url = streams
        .get_exec_url(ExecRequest {
            container_id: record.id,
            cmd: request.cmd,
            tty: request.tty,
            stdin: request.stdin,
            stdout: request.stdout,
            stderr: request.stderr,
        })
        .map_err(|e| status_of("Exec", e))?;
    Ok(cri::ExecResponse { url })
}
