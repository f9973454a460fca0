//! An exec or attach session over SPDY: the streams kubectl opens, in its order.

use serde_json::Value;

use super::spdy_client::{SpdyClient, Stream};

/// The streams of one exec or attach session.
pub struct Session {
    pub client: SpdyClient,
    pub error: Stream,
    pub stdin: Option<Stream>,
    pub stdout: Stream,
    /// None with a tty (a terminal merges stderr into stdout).
    pub stderr: Option<Stream>,
    /// With a tty, except on v2 (which has no resize stream).
    pub resize: Option<Stream>,
}

impl Session {
    /// Upgrades `url` to `protocol` and opens the streams as kubectl does: error first,
    /// then stdin, stdout, stderr and resize as asked for. Panics if the server refuses
    /// or picks another protocol.
    pub async fn open(
        url: &str,
        protocol: &str,
        stdin: bool,
        tty: bool,
        flow_control: bool,
    ) -> Session {
        let (client, chosen) = SpdyClient::connect(url, &[protocol], flow_control)
            .await
            .unwrap_or_else(|r| panic!("upgrade to {protocol} refused: {r:?}"));
        assert_eq!(chosen, protocol);
        let error = client.open(&[("streamtype", "error")]).await;
        let stdin = if stdin {
            Some(client.open(&[("streamtype", "stdin")]).await)
        } else {
            None
        };
        let stdout = client.open(&[("streamtype", "stdout")]).await;
        let stderr = if tty {
            None
        } else {
            Some(client.open(&[("streamtype", "stderr")]).await)
        };
        let resize = if tty && protocol != "v2.channel.k8s.io" {
            Some(client.open(&[("streamtype", "resize")]).await)
        } else {
            None
        };
        Session {
            client,
            error,
            stdin,
            stdout,
            stderr,
            resize,
        }
    }
}

/// The error stream's content as the Status object it must be.
pub fn status(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("status {:?}: {e}", String::from_utf8_lossy(bytes)))
}
