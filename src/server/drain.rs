//! The drain on SIGTERM or SIGINT (docs/protocol.md#shutdown): `/readyz` turns 503 and new
//! streams get only a `retry:` line; open streams are ended one by one, spread over the first
//! half of the shutdown window so their clients do not all come back at once; then requests in
//! flight finish, the background tasks stop, and the store commits what it holds.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio::time::Instant;

use super::accept::Acceptor;
use super::tasks::BackgroundTasks;
use crate::app::AppState;
use crate::hub::Hub;
use crate::sse::outbox::Closing;

pub(super) async fn drain(
    state: &AppState,
    listener: TcpListener,
    acceptor: Acceptor,
    tasks: BackgroundTasks,
) {
    let timeout = state.settings.shutdown_timeout;
    let deadline = Instant::now() + timeout;
    tracing::info!(?timeout, "draining");
    state.draining.cancel();
    let closing = Hub::close_spread(state.hub.all_outboxes(), timeout / 2);
    // Keep accepting while streams close, so reconnecting clients hear "retry later".
    acceptor.accept_until(&listener, closing).await;
    drop(listener);
    // Streams admitted in the instant before the drain began.
    for outbox in state.hub.all_outboxes() {
        outbox.close(Closing::Drain);
    }
    // Leave a little of the window for the store's final commit.
    let margin = (timeout / 10).min(Duration::from_secs(1));
    acceptor
        .finish(deadline.checked_sub(margin).unwrap_or(deadline))
        .await;
    tasks.stop().await;
    state.store.close().await;
    tracing::info!("drained");
}
