//! Linux: logind on the system bus, through `zbus`.

use std::future::poll_fn;
use std::os::fd::OwnedFd;
use std::pin::Pin;

use futures_core::Stream;
use zbus::message::Type;
use zbus::{Connection, MatchRule, MessageStream};

use super::{PowerError, PowerEvent, WatchConfig, from_logind};

const DESTINATION: &str = "org.freedesktop.login1";
const PATH: &str = "/org/freedesktop/login1";
const MANAGER: &str = "org.freedesktop.login1.Manager";

#[derive(Debug)]
pub(super) struct Watch {
    connection: Connection,
    signals: MessageStream,
    /// logind leaving the bus (a restart): its signals would come from another connection.
    owner_changes: MessageStream,
    who: String,
    why: String,
    /// The delay inhibitor lock: logind holds sleep back while this descriptor is open.
    lock: Option<OwnedFd>,
}

fn service(what: &str) -> impl FnOnce(zbus::Error) -> PowerError + '_ {
    move |e| PowerError::Service(format!("{what}: {e}"))
}

impl Watch {
    pub(super) async fn start(config: &WatchConfig) -> Result<Watch, PowerError> {
        let connection = system_bus(config).await?;
        // Signals are heard only from logind's own connection: on the system bus anyone may
        // send a signal with logind's path and interface.
        let owner = zbus::fdo::DBusProxy::new(&connection)
            .await
            .map_err(service("the system bus"))?
            .get_name_owner(
                zbus::names::WellKnownName::from_static_str_unchecked(DESTINATION).into(),
            )
            .await
            .map_err(|e| PowerError::Service(format!("logind is not on the system bus: {e}")))?;
        let rule = MatchRule::builder()
            .msg_type(Type::Signal)
            .sender(owner.as_str())
            .and_then(|b| b.path(PATH))
            .and_then(|b| b.interface(MANAGER))
            .map_err(service("logind's signals"))?
            .build();
        // Subscribed before the lock is taken, so no announcement falls between the two.
        let signals = MessageStream::for_match_rule(rule, &connection, Some(16))
            .await
            .map_err(service("subscribing to logind's signals"))?;
        let owner_rule = MatchRule::builder()
            .msg_type(Type::Signal)
            .sender("org.freedesktop.DBus")
            .and_then(|b| b.interface("org.freedesktop.DBus"))
            .and_then(|b| b.member("NameOwnerChanged"))
            .and_then(|b| b.arg(0, DESTINATION))
            .map_err(service("logind's name on the bus"))?
            .build();
        let owner_changes = MessageStream::for_match_rule(owner_rule, &connection, Some(4))
            .await
            .map_err(service("following logind's name on the bus"))?;
        let mut watch = Watch {
            connection,
            signals,
            owner_changes,
            who: config.who.clone(),
            why: config.why.clone(),
            lock: None,
        };
        watch.take_lock().await?;
        Ok(watch)
    }

    async fn take_lock(&mut self) -> Result<(), PowerError> {
        let what = ("sleep:shutdown", self.who.as_str(), self.why.as_str());
        self.lock = Some(inhibit(&self.connection, what, "delay").await?);
        Ok(())
    }

    pub(super) async fn next(&mut self) -> Result<PowerEvent, PowerError> {
        loop {
            let message = poll_fn(|cx| {
                // logind going away ends the watch: the caller starts a new one, which follows
                // the new logind (and takes a new lock).
                if let std::task::Poll::Ready(Some(_)) =
                    Pin::new(&mut self.owner_changes).poll_next(cx)
                {
                    return std::task::Poll::Ready(Some(Err(zbus::Error::Failure(
                        "logind left the system bus (restarted?)".into(),
                    ))));
                }
                Pin::new(&mut self.signals).poll_next(cx)
            })
            .await
            .ok_or_else(|| PowerError::Service("the system bus closed".into()))?
            .map_err(service("reading logind's signals"))?;
            let header = message.header();
            let Some(member) = header.member() else {
                continue;
            };
            let Ok(start) = message.body().deserialize::<bool>() else {
                continue;
            };
            let Some(event) = from_logind(member.as_str(), start) else {
                continue;
            };
            let over = matches!(event, PowerEvent::Woke | PowerEvent::ShutdownCalledOff);
            if over && self.lock.is_none() {
                self.take_lock().await?;
            }
            return Ok(event);
        }
    }

    pub(super) fn release(&mut self) {
        self.lock = None;
    }

    pub(super) fn holds_sleep(&self) -> bool {
        self.lock.is_some()
    }
}

/// The system bus: `config.bus_address`, else `DBUS_SYSTEM_BUS_ADDRESS`, else the standard one.
async fn system_bus(config: &WatchConfig) -> Result<Connection, PowerError> {
    let address = config
        .bus_address
        .clone()
        .or_else(|| std::env::var("DBUS_SYSTEM_BUS_ADDRESS").ok());
    match &address {
        Some(address) => {
            zbus::connection::Builder::address(address.as_str())
                .map_err(service("the system bus's address"))?
                .build()
                .await
        }
        None => Connection::system().await,
    }
    .map_err(service("connecting to the system bus"))
}

/// Takes a logind inhibitor lock: `(what, who, why)` in `mode` (`delay` or `block`). logind
/// honours it until every copy of the descriptor is closed.
async fn inhibit(
    connection: &Connection,
    (what, who, why): (&str, &str, &str),
    mode: &str,
) -> Result<OwnedFd, PowerError> {
    let reply = connection
        .call_method(
            Some(DESTINATION),
            PATH,
            Some(MANAGER),
            "Inhibit",
            &(what, who, why, mode),
        )
        .await
        .map_err(|e| PowerError::Service(format!("taking logind's {what} {mode} lock: {e}")))?;
    let fd: zbus::zvariant::OwnedFd = reply
        .body()
        .deserialize()
        .map_err(|e| PowerError::Service(format!("logind's {what} {mode} lock: {e}")))?;
    Ok(fd.into())
}

/// Holds logind's idle action back with a `block` lock on `idle`.
#[derive(Debug)]
pub(super) struct Awake {
    _lock: OwnedFd,
}

impl Awake {
    pub(super) async fn hold(config: &WatchConfig) -> Result<Awake, PowerError> {
        let connection = system_bus(config).await?;
        let what = ("idle", config.who.as_str(), config.why.as_str());
        Ok(Awake {
            _lock: inhibit(&connection, what, "block").await?,
        })
    }
}
