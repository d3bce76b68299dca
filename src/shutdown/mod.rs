//! Ending the game without losing anything: the exit save, the signals that ask for it.

mod exit;
mod signals;

pub(crate) use exit::install;
pub use exit::{ExitReport, MarketplaceExit};
pub use signals::ExitOnSignal;
