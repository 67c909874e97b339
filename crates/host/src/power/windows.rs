//! Windows: the watcher is not written yet; `PowerWatch::start` fails with `Unsupported`, and the
//! notifications are read by the parsers in `parse.rs`.

use super::{PowerError, PowerEvent, WatchConfig};

#[derive(Debug)]
pub(super) struct Watch {
    never: std::convert::Infallible,
}

impl Watch {
    pub(super) async fn start(_config: &WatchConfig) -> Result<Watch, PowerError> {
        Err(PowerError::Unsupported(std::env::consts::OS))
    }

    pub(super) async fn next(&mut self) -> Result<PowerEvent, PowerError> {
        match self.never {}
    }

    pub(super) fn release(&mut self) {
        match self.never {}
    }

    pub(super) fn holds_sleep(&self) -> bool {
        match self.never {}
    }
}

#[derive(Debug)]
pub(super) enum Awake {}

impl Awake {
    pub(super) async fn hold(_config: &WatchConfig) -> Result<Awake, PowerError> {
        Err(PowerError::Unsupported(std::env::consts::OS))
    }
}
