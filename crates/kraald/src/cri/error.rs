//! How domain errors become gRPC statuses: the code tells kubelet what kind of failure it
//! was, the message tells a person what was wrong and what is expected.

use kraal_image::{ErrorKind, ImageError};
use tonic::{Code, Status};

pub fn image_error(err: ImageError) -> Status {
    let code = match err.kind() {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::Unauthenticated => Code::Unauthenticated,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::DataLoss => Code::DataLoss,
        ErrorKind::Internal => Code::Internal,
    };
    Status::new(code, err.to_string())
}

/// For RPCs whose issue has not landed yet: say which call, so a kubelet log is readable.
pub fn not_implemented(call: &str) -> Status {
    Status::unimplemented(format!("{call} is not implemented by kraal yet"))
}

/// A required field that the request left empty.
pub fn missing(call: &str, field: &str, expected: &str) -> Status {
    Status::invalid_argument(format!("{call}: {field} is empty; expected {expected}"))
}
