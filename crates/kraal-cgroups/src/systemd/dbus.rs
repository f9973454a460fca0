//! [`Systemd`] over D-Bus with zbus's blocking API.
//!
//! The system bus first (what kubelet and runc use); when the node has no D-Bus daemon,
//! systemd's private socket, which systemd serves to root itself (systemctl uses it too).

use std::time::{Duration, Instant};

use tracing::debug;
use zbus::blocking::Connection;
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value as ZValue};

use super::{Property, Systemd, SystemdError, Value, booted};

const DEST: &str = "org.freedesktop.systemd1";
const PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const UNIT: &str = "org.freedesktop.systemd1.Unit";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";
const NO_SUCH_UNIT: &str = "org.freedesktop.systemd1.NoSuchUnit";
const PRIVATE_SOCKET: &str = "unix:path=/run/systemd/private";

/// How long a unit may take to start or stop. Generous: systemd serialises jobs, and on a
/// busy node (or an emulated test guest) one takes far longer than the usual milliseconds.
const WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

/// A connection to systemd's manager.
pub struct DbusSystemd {
    conn: Connection,
    /// On the private socket there is no bus: calls carry no destination.
    p2p: bool,
}

impl DbusSystemd {
    /// Connects; [`SystemdError::NotBooted`] when PID 1 is not systemd.
    pub fn connect() -> Result<Self, SystemdError> {
        if !booted() {
            return Err(SystemdError::NotBooted);
        }
        // Every call has a deadline: a systemd that stops answering must fail the CRI call
        // that waits for it, not hang it (and kubelet's retries behind it).
        let system = zbus::blocking::connection::Builder::system()
            .map(|b| b.method_timeout(WAIT))
            .and_then(|b| b.build());
        match system {
            Ok(conn) => Ok(DbusSystemd { conn, p2p: false }),
            Err(bus_err) => {
                debug!(error = %bus_err, "no D-Bus system bus; using systemd's private socket");
                let conn = zbus::blocking::connection::Builder::address(PRIVATE_SOCKET)
                    .and_then(|b| b.p2p().method_timeout(WAIT).build())
                    .map_err(|e| {
                        SystemdError::Connect(format!(
                            "system bus: {bus_err}; {PRIVATE_SOCKET}: {e}"
                        ))
                    })?;
                Ok(DbusSystemd { conn, p2p: true })
            }
        }
    }

    fn call<B>(
        &self,
        path: &str,
        iface: &str,
        method: &'static str,
        unit: &str,
        body: &B,
    ) -> Result<zbus::message::Message, CallError>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        let dest = (!self.p2p).then_some(DEST);
        self.conn
            .call_method(dest, path, Some(iface), method, body)
            .map_err(|e| match &e {
                zbus::Error::MethodError(name, _, _) if name.as_str() == NO_SUCH_UNIT => {
                    CallError::NoSuchUnit
                }
                _ => CallError::Other(SystemdError::Call {
                    method,
                    unit: unit.to_string(),
                    reason: e.to_string(),
                }),
            })
    }

    fn unit_path(&self, unit: &str) -> Result<Option<OwnedObjectPath>, SystemdError> {
        match self.call(PATH, MANAGER, "GetUnit", unit, &(unit,)) {
            Ok(reply) => reply
                .body()
                .deserialize::<OwnedObjectPath>()
                .map(Some)
                .map_err(|e| call_err("GetUnit", unit, e)),
            Err(CallError::NoSuchUnit) => Ok(None),
            Err(CallError::Other(e)) => Err(e),
        }
    }

    /// Polls until `done` holds for the unit's state (None: systemd forgot the unit).
    fn wait(
        &self,
        unit: &str,
        want: &'static str,
        done: impl Fn(Option<&str>) -> Result<bool, SystemdError>,
    ) -> Result<(), SystemdError> {
        let start = Instant::now();
        loop {
            let state = self.active_state(unit)?;
            if done(state.as_deref())? {
                return Ok(());
            }
            if start.elapsed() >= WAIT {
                return Err(SystemdError::Timeout {
                    unit: unit.to_string(),
                    want,
                    state: state.unwrap_or_else(|| "not loaded".into()),
                    waited_ms: start.elapsed().as_millis() as u64,
                });
            }
            std::thread::sleep(POLL);
        }
    }
}

enum CallError {
    NoSuchUnit,
    Other(SystemdError),
}

fn call_err(method: &'static str, unit: &str, e: impl std::fmt::Display) -> SystemdError {
    SystemdError::Call {
        method,
        unit: unit.to_string(),
        reason: e.to_string(),
    }
}

fn other(e: CallError, method: &'static str, unit: &str) -> SystemdError {
    match e {
        CallError::NoSuchUnit => call_err(method, unit, "no such unit"),
        CallError::Other(e) => e,
    }
}

fn zvalue(v: &Value) -> ZValue<'_> {
    match v {
        Value::Bool(b) => ZValue::from(*b),
        Value::U64(n) => ZValue::from(*n),
        Value::Str(s) => ZValue::from(s.as_str()),
        Value::U32s(v) => ZValue::from(v.clone()),
        Value::Bytes(v) => ZValue::from(v.clone()),
    }
}

fn body(props: &[Property]) -> Vec<(&str, ZValue<'_>)> {
    props.iter().map(|p| (p.name, zvalue(&p.value))).collect()
}

impl Systemd for DbusSystemd {
    fn version(&self) -> Result<String, SystemdError> {
        let reply = self
            .call(PATH, PROPERTIES, "Get", "manager", &(MANAGER, "Version"))
            .map_err(|e| other(e, "Get Version", "manager"))?;
        let value: OwnedValue = reply
            .body()
            .deserialize()
            .map_err(|e| call_err("Get Version", "manager", e))?;
        String::try_from(value).map_err(|e| call_err("Get Version", "manager", e))
    }

    fn active_state(&self, unit: &str) -> Result<Option<String>, SystemdError> {
        let Some(path) = self.unit_path(unit)? else {
            return Ok(None);
        };
        let reply = match self.call(
            path.as_str(),
            PROPERTIES,
            "Get",
            unit,
            &(UNIT, "ActiveState"),
        ) {
            Ok(r) => r,
            // Unloaded between the two calls.
            Err(CallError::NoSuchUnit) => return Ok(None),
            Err(CallError::Other(e)) => return Err(e),
        };
        let value: OwnedValue = reply
            .body()
            .deserialize()
            .map_err(|e| call_err("Get ActiveState", unit, e))?;
        String::try_from(value)
            .map(Some)
            .map_err(|e| call_err("Get ActiveState", unit, e))
    }

    fn start_transient(&self, unit: &str, props: &[Property]) -> Result<(), SystemdError> {
        let aux: Vec<(&str, Vec<(&str, ZValue<'_>)>)> = Vec::new();
        // "fail": never replace a job already queued for a unit of the same name.
        self.call(
            PATH,
            MANAGER,
            "StartTransientUnit",
            unit,
            &(unit, "fail", body(props), aux),
        )
        .map_err(|e| other(e, "StartTransientUnit", unit))?;
        self.wait(unit, "active", |state| match state {
            Some("active") => Ok(true),
            Some("failed") => Err(call_err(
                "StartTransientUnit",
                unit,
                "the unit failed (journalctl -u it says why)",
            )),
            _ => Ok(false),
        })
    }

    fn set_properties(&self, unit: &str, props: &[Property]) -> Result<(), SystemdError> {
        if props.is_empty() {
            return Ok(());
        }
        self.call(
            PATH,
            MANAGER,
            "SetUnitProperties",
            unit,
            &(unit, true, body(props)),
        )
        .map(|_| ())
        .map_err(|e| other(e, "SetUnitProperties", unit))
    }

    fn stop(&self, unit: &str) -> Result<(), SystemdError> {
        match self.call(PATH, MANAGER, "StopUnit", unit, &(unit, "replace")) {
            Ok(_) | Err(CallError::NoSuchUnit) => {}
            Err(CallError::Other(e)) => return Err(e),
        }
        self.wait(unit, "stopped", |state| {
            Ok(matches!(state, None | Some("inactive" | "failed")))
        })
    }
}
