//! Single-use, expiring tokens: the CRI call stores the request and gets a token for its
//! URL; the first connection with the token takes the request out. A second use, or a use
//! after the TTL, finds nothing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::StreamError;
use crate::remotecommand::Command;
use crate::runtime::PortForwardRequest;

#[derive(Debug, Clone)]
pub(crate) enum Pending {
    Command(Command),
    PortForward(PortForwardRequest),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Exec,
    Attach,
    PortForward,
}

impl Pending {
    fn kind(&self) -> Kind {
        match self {
            Pending::Command(Command::Exec(_)) => Kind::Exec,
            Pending::Command(Command::Attach(_)) => Kind::Attach,
            Pending::PortForward(_) => Kind::PortForward,
        }
    }
}

#[derive(Debug)]
pub(crate) enum Lookup {
    Found(Pending),
    Expired,
    Unknown,
}

pub(crate) struct TokenStore {
    ttl: Duration,
    max_pending: usize,
    inner: Mutex<HashMap<String, (Pending, Instant)>>,
}

impl TokenStore {
    pub(crate) fn new(ttl: Duration, max_pending: usize) -> Self {
        TokenStore {
            ttl,
            max_pending,
            inner: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Pending, Instant)>> {
        // The map holds plain data; a poisoned lock still holds a consistent map.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn insert(&self, req: Pending) -> Result<String, StreamError> {
        let mut buf = [0u8; 16];
        getrandom::fill(&mut buf)
            .map_err(|e| StreamError::Internal(format!("no randomness for a token: {e}")))?;
        let token = hex::encode(buf);
        let now = Instant::now();
        let mut map = self.map();
        // Expired entries are dropped here so an unused URL does not stay forever; one
        // that expired a moment ago is then "unknown" rather than "expired" - both refused.
        if map.len() >= self.max_pending / 2 {
            map.retain(|_, (_, deadline)| *deadline > now);
        }
        if map.len() >= self.max_pending {
            return Err(StreamError::ResourceExhausted(format!(
                "{} streaming requests are waiting for their client",
                map.len()
            )));
        }
        map.insert(token.clone(), (req, now + self.ttl));
        Ok(token)
    }

    /// Takes the request out if `token` is live and of `kind`; it cannot be taken twice.
    pub(crate) fn take(&self, kind: Kind, token: &str) -> Lookup {
        let mut map = self.map();
        match map.get(token) {
            None => Lookup::Unknown,
            Some((p, _)) if p.kind() != kind => Lookup::Unknown,
            Some((_, deadline)) if *deadline <= Instant::now() => {
                map.remove(token);
                Lookup::Expired
            }
            Some(_) => match map.remove(token) {
                Some((p, _)) => Lookup::Found(p),
                None => Lookup::Unknown,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pf() -> Pending {
        Pending::PortForward(PortForwardRequest {
            pod_sandbox_id: "p".into(),
            ports: vec![80],
        })
    }

    #[tokio::test(start_paused = true)]
    async fn single_use_and_expiry() {
        let s = TokenStore::new(Duration::from_secs(60), 10);
        let t = s.insert(pf()).unwrap();
        assert_eq!(t.len(), 32);
        assert!(matches!(s.take(Kind::Exec, &t), Lookup::Unknown));
        assert!(matches!(s.take(Kind::PortForward, &t), Lookup::Found(_)));
        assert!(matches!(s.take(Kind::PortForward, &t), Lookup::Unknown));
        let t = s.insert(pf()).unwrap();
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(matches!(s.take(Kind::PortForward, &t), Lookup::Expired));
    }

    #[tokio::test(start_paused = true)]
    async fn pending_tokens_are_bounded() {
        let s = TokenStore::new(Duration::from_secs(60), 4);
        for _ in 0..4 {
            s.insert(pf()).unwrap();
        }
        assert!(matches!(
            s.insert(pf()),
            Err(StreamError::ResourceExhausted(_))
        ));
        tokio::time::advance(Duration::from_secs(61)).await;
        s.insert(pf()).unwrap();
    }
}
