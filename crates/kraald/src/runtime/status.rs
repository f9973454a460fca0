//! Small constructors for gRPC statuses with context.

use tonic::Status;

pub fn internal(what: impl std::fmt::Display, err: impl std::fmt::Display) -> Status {
    Status::internal(format!("{what}: {err}"))
}

pub fn io_status(what: impl std::fmt::Display, err: std::io::Error) -> Status {
    Status::internal(format!("{what}: {err}"))
}
