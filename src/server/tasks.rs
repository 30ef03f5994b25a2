//! The node's background tasks, under one tracker and one stop token: heartbeats on quiet
//! streams, the retention sweep, deleting expired notifications, and forgetting clients whose
//! publish budget has refilled.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::AppState;
use crate::domain::UserId;
use crate::http::rate_limit;
use crate::push::deliver::Pusher;
use crate::store::Store;

pub(super) struct BackgroundTasks {
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl BackgroundTasks {
    pub fn start(state: &AppState) -> Self {
        let tracker = TaskTracker::new();
        let stop = CancellationToken::new();
        tracker.spawn(send_heartbeats(state.clone(), stop.clone()));
        tracker.spawn(sweep_retention(state.clone(), stop.clone()));
        tracker.spawn(expire_notifications(state.clone(), stop.clone()));
        if let Some(push) = &state.settings.push {
            let pusher = Pusher {
                store: state.store.clone(),
                key: push.key.clone(),
                subject: push.subject.clone(),
                endpoints: push.endpoints.clone(),
                metrics: state.metrics.clone(),
                queued: state.pushes_queued.clone(),
                server: tokio::runtime::Handle::current(),
                publishing: state.publishing.clone(),
            };
            match pusher.start(stop.clone()) {
                Ok(stopped) => {
                    tracker.spawn(async move {
                        let _ = stopped.await;
                    });
                }
                Err(error) => {
                    tracing::error!(%error, "cannot start the pusher: no pushes will be made");
                }
            }
        }
        if matches!(state.store, Store::Redis(_)) {
            let (changes, changed) = tokio::sync::mpsc::unbounded_channel();
            state.hub.report_presence(changes);
            tracker.spawn(report_presence(state.clone(), changed, stop.clone()));
        }
        if let Some(limiter) = &state.publish_limiter {
            tracker.spawn(rate_limit::forget_quiet_clients(
                limiter.clone(),
                stop.clone(),
            ));
        }
        tracker.close();
        Self { tracker, stop }
    }

    /// Stops every task and waits until each has returned.
    pub async fn stop(self) {
        self.stop.cancel();
        self.tracker.wait().await;
    }
}

async fn send_heartbeats(state: AppState, stop: CancellationToken) {
    let idle = state.settings.heartbeat;
    let tick = (idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut ticks = tokio::time::interval(tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => state.hub.send_heartbeats(idle),
        }
    }
}

async fn sweep_retention(state: AppState, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(state.settings.sweep_every);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {
                let started = std::time::Instant::now();
                match state.store.sweep().await {
                    Ok(()) => state
                        .metrics
                        .retention_sweep
                        .observe(started.elapsed().as_secs_f64()),
                    Err(error) => tracing::warn!(%error, "retention sweep failed"),
                }
            }
        }
    }
}

async fn expire_notifications(state: AppState, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(state.settings.expire_every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => match state.store.expire().await {
                Ok(expired) if expired.notifications > 0 => {
                    tracing::debug!(
                        notifications = expired.notifications,
                        "deleted expired notifications"
                    );
                    state.metrics.events_published.inc_by(expired.events);
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "deleting expired notifications failed"),
            },
        }
    }
}

/// Keeps this node's part of the cluster-wide presence current: each user whose count of
/// streams here changed is written with the count as it is when written (so a burst of
/// changes is one write per user).
async fn report_presence(
    state: AppState,
    mut changed: tokio::sync::mpsc::UnboundedReceiver<UserId>,
    stop: CancellationToken,
) {
    let mut users = std::collections::HashSet::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            user = changed.recv() => match user {
                Some(user) => { users.insert(user); }
                None => return,
            },
        }
        while let Ok(user) = changed.try_recv() {
            users.insert(user);
        }
        let changes: Vec<(UserId, usize)> = users
            .iter()
            .map(|user| (user.clone(), state.hub.streams_of(user)))
            .collect();
        match state.store.set_presence(&changes).await {
            Ok(()) => users.clear(),
            // Kept, to be written with the next change (or the next try).
            Err(error) => {
                tracing::warn!(%error, "cannot record this node's streams in Redis");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                }
            }
        }
    }
}
