//! What goes on the error stream when a command ends. From `v4.channel.k8s.io` on it is a
//! metav1.Status object: the client reads the exit code from
//! `details.causes[reason=ExitCode].message`. Earlier versions carry plain text, and nothing
//! at all on success.

use serde_json::{Value, json};

use crate::error::StreamError;

/// How an exec or attach ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    Exited(i32),
    Detached,
    Failed(StreamError),
}

pub(crate) fn status_json(outcome: &Outcome) -> Vec<u8> {
    let v = match outcome {
        Outcome::Exited(0) | Outcome::Detached => success(),
        Outcome::Exited(code) => json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": { "causes": [ { "reason": "ExitCode", "message": code.to_string() } ] },
        }),
        Outcome::Failed(e) => {
            let (reason, code) = match e {
                StreamError::NotFound(_) => ("NotFound", 404),
                StreamError::InvalidArgument(_) => ("BadRequest", 400),
                StreamError::FailedPrecondition(_) => ("Conflict", 409),
                StreamError::ResourceExhausted(_) => ("TooManyRequests", 429),
                _ => ("InternalError", 500),
            };
            json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": e.to_string(),
                "reason": reason,
                "code": code,
            })
        }
    };
    v.to_string().into_bytes()
}

fn success() -> Value {
    json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success" })
}

/// The pre-v4 error stream: text on failure, nothing on success.
pub(crate) fn status_text(outcome: &Outcome) -> Option<Vec<u8>> {
    match outcome {
        Outcome::Exited(0) | Outcome::Detached => None,
        Outcome::Exited(code) => Some(
            format!("command terminated with non-zero exit code: exit status {code}").into_bytes(),
        ),
        Outcome::Failed(e) => Some(e.to_string().into_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_is_a_cause() {
        let v: Value = serde_json::from_slice(&status_json(&Outcome::Exited(3))).unwrap();
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");
        let v: Value = serde_json::from_slice(&status_json(&Outcome::Exited(0))).unwrap();
        assert_eq!(v["status"], "Success");
        assert!(status_text(&Outcome::Exited(0)).is_none());
    }
}
