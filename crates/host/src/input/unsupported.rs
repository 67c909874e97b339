//! No input watch on this OS: [`InputWatch::start`](super::InputWatch::start) fails.

use super::UNSUPPORTED;

#[derive(Debug)]
pub(super) struct Watch {
    never: std::convert::Infallible,
}

impl Watch {
    pub(super) fn start(
        _display: Option<String>,
        _note: Box<dyn FnMut() + Send>,
    ) -> Result<(Watch, String), String> {
        Err(UNSUPPORTED.to_owned())
    }

    pub(super) fn stop(&mut self) {
        match self.never {}
    }
}
