//! `ExitOnSignal`: a termination signal ends the app through `AppExit`, so players are saved.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bevy::prelude::*;

/// Turns SIGTERM, SIGINT and SIGHUP into [`AppExit`], so the marketplace saves every player and
/// releases their leases before the process ends (see
/// [`MarketplacePlugin::exit_timeout`](crate::MarketplacePlugin::exit_timeout)). A second
/// signal ends the process at once. Windowed games get Ctrl+C from bevy's
/// `TerminalCtrlCHandlerPlugin`; headless servers (`MinimalPlugins`, a container's `docker stop`,
/// systemd) add this:
///
/// ```no_run
/// # use bevy::prelude::*;
/// # use bevy_marketplace::prelude::*;
/// App::new()
///     .add_plugins((MinimalPlugins, AssetPlugin::default(), MarketplacePlugin::default(), ExitOnSignal))
///     .run();
/// ```
///
/// On platforms without Unix signals it does nothing.
#[derive(Default)]
pub struct ExitOnSignal;

/// Set by the signal handler, read once a frame.
#[derive(Resource, Clone)]
struct SignalReceived(Arc<AtomicBool>);

impl Plugin for ExitOnSignal {
    fn build(&self, app: &mut App) {
        let received = Arc::new(AtomicBool::new(false));
        #[cfg(unix)]
        {
            use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
            for signal in [SIGTERM, SIGINT, SIGHUP] {
                // The first signal asks for a graceful exit; a second one (the flag already set)
                // ends the process at once, for a save that hangs.
                let registered =
                    signal_hook::flag::register_conditional_shutdown(signal, 1, received.clone())
                        .and_then(|_| signal_hook::flag::register(signal, received.clone()));
                if let Err(e) = registered {
                    tracing::warn!("ExitOnSignal: cannot handle signal {signal}: {e}");
                }
            }
        }
        app.insert_resource(SignalReceived(received))
            .add_systems(First, exit_on_signal);
    }
}

fn exit_on_signal(
    received: Res<SignalReceived>,
    mut exit: MessageWriter<AppExit>,
    mut sent: Local<bool>,
) {
    if !*sent && received.0.load(Ordering::Relaxed) {
        *sent = true;
        tracing::info!("termination signal: exiting after saving every player");
        exit.write(AppExit::Success);
    }
}
