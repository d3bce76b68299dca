//! Notifications of the change feed: a connection of its own that listens for the
//! `bevy_marketplace_changes` notification every batch adding to the feed sends as it commits,
//! so a change made by another server or the admin tool reaches a game at once instead of at its
//! next poll.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use tokio_postgres::{AsyncMessage, Config, NoTls};

use super::PostgresOptions;

/// The channel the write-back notifies on.
pub(super) const CHANNEL: &str = "bevy_marketplace_changes";

/// Starts a thread that sets the returned flag whenever the feed moves (and once on every
/// (re)connection, since notifications sent while it was away were missed). It stops once the
/// flag's other holders are gone.
pub(crate) fn listen(options: &PostgresOptions) -> Arc<AtomicBool> {
    let notices = Arc::new(AtomicBool::new(false));
    let flag = notices.clone();
    let options = options.clone();
    let spawned = std::thread::Builder::new()
        .name("marketplace-ledger-listener".into())
        .spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(run(options, flag));
        });
    if let Err(error) = spawned {
        tracing::warn!("no change notifications (the OS refused a thread: {error}); polling only");
    }
    notices
}

async fn run(options: PostgresOptions, flag: Arc<AtomicBool>) {
    let Ok(mut config) = Config::from_str(&options.url) else {
        return;
    };
    config.connect_timeout(options.connect_timeout);
    // The listener lives while anyone else holds the flag.
    while Arc::strong_count(&flag) > 1 {
        if let Ok((client, mut connection)) = config.connect(NoTls).await {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            let statement = format!("LISTEN {CHANNEL}");
            let listening = client.batch_execute(&statement);
            tokio::pin!(listening);
            // The connection must be driven while the LISTEN is answered.
            let mut listened = false;
            loop {
                if !listened {
                    tokio::select! {
                        done = &mut listening => {
                            if done.is_err() { break; }
                            listened = true;
                            // Whatever changed while no one listened is read now.
                            flag.store(true, Ordering::Relaxed);
                        }
                        message = messages.next() => {
                            if !matches!(message, Some(Ok(_))) { break; }
                        }
                    }
                    continue;
                }
                match tokio::time::timeout(Duration::from_secs(1), messages.next()).await {
                    Ok(Some(Ok(AsyncMessage::Notification(_)))) => {
                        flag.store(true, Ordering::Relaxed);
                    }
                    Ok(Some(Ok(_))) => {}
                    Ok(_) => break, // the connection ended
                    Err(_) if Arc::strong_count(&flag) > 1 => {}
                    Err(_) => return,
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
