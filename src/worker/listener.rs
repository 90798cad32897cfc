//! The listener: one connection of the worker LISTENs on `barkeep_data`
//! (new 1m data), `barkeep_registry` (registry changes) and `barkeep_tasks`
//! (operator commands) and passes what it hears to the scheduler as
//! [`Event`]s. It reconnects with backoff; the scheduler's polling keeps
//! the worker moving meanwhile, and a reconnect is an event of its own,
//! since notifications may have been missed.

use anyhow::{Context, Result};
use tokio::sync::mpsc;
use tokio_postgres::{Client, Notification};
use tokio_util::sync::CancellationToken;

use super::retry::Backoff;
use crate::db::Database;

/// Something the listening connection heard.
#[derive(Debug)]
pub(super) enum Event {
    /// New 1m data for these symbols (None: too many to name).
    Data(Option<Vec<String>>),
    Registry,
    /// An operator changed tasks.
    Tasks,
    /// (Re)connected: notifications may have been missed.
    Listening,
}

impl Event {
    /// What a notification means; the data trigger sends `*` when its
    /// symbols do not fit in one payload.
    fn of(n: &Notification) -> Self {
        match n.channel() {
            "barkeep_registry" => Event::Registry,
            "barkeep_tasks" => Event::Tasks,
            _ if n.payload() == "*" => Event::Data(None),
            _ => Event::Data(Some(n.payload().split(',').map(str::to_string).collect())),
        }
    }
}

/// How listening on one connection ended.
enum Ended {
    /// The connection closed: reconnect.
    Closed,
    /// `kill`, or the scheduler is gone: stop listening.
    Stop,
}

/// Keep a LISTEN connection open, reconnecting with backoff, and pass what
/// it hears on until `kill` or until nobody listens to `events`.
pub(super) async fn run(
    db: Database,
    events: mpsc::UnboundedSender<Event>,
    kill: CancellationToken,
) {
    let mut backoff = Backoff::default();
    loop {
        match listen(&db).await {
            Ok((client, rx)) => {
                if backoff.attempts() > 0 {
                    tracing::warn!("listening for new data again");
                }
                backoff.reset();
                if events.send(Event::Listening).is_err() {
                    return;
                }
                if let Ended::Stop = relay(rx, &events, &kill).await {
                    return;
                }
                drop(client);
                tracing::warn!("the listening connection closed; reconnecting (polling meanwhile)");
            }
            Err(e) => {
                if backoff.attempts() == 0 {
                    tracing::warn!("cannot listen for new data, retrying: {e:#}");
                }
            }
        }
        if !backoff.wait(&kill).await {
            return;
        }
    }
}

/// A connection listening on the worker's three channels.
async fn listen(db: &Database) -> Result<(Client, mpsc::UnboundedReceiver<Notification>)> {
    let (client, rx) = db.connect_listening().await?;
    client
        .batch_execute("LISTEN barkeep_data; LISTEN barkeep_registry; LISTEN barkeep_tasks")
        .await
        .context("listening for new data")?;
    Ok((client, rx))
}

/// Pass notifications on as events until the connection closes.
async fn relay(
    mut rx: mpsc::UnboundedReceiver<Notification>,
    events: &mpsc::UnboundedSender<Event>,
    kill: &CancellationToken,
) -> Ended {
    loop {
        tokio::select! {
            n = rx.recv() => match n {
                Some(n) => {
                    if events.send(Event::of(&n)).is_err() {
                        return Ended::Stop;
                    }
                }
                None => return Ended::Closed,
            },
            _ = kill.cancelled() => return Ended::Stop,
        }
    }
}
