//! Hearing other servers' commits: a task with its own connection that `LISTEN`s on
//! [`crate::CHANNEL`] and tells the store's [`CommitHook`] of each `NOTIFY` (context and
//! head), which every committing transaction sends (see [`crate::write::notify_head`]).
//!
//! A notification is only a hint: a listener that was disconnected misses those sent
//! meanwhile. So after every (re)connect the hook is told of every context's head, and
//! the server's publishers keep polling too (every few seconds); a lost notification
//! delays a revision, never loses it. The connection is opened again, with a backoff of
//! up to 5 s, whenever it ends (`pg_terminate_backend`, a database restart).

use std::time::Duration;

use ctxsync_store::CommitHook;
use tokio_postgres::AsyncMessage;

use crate::error::describe;

/// The `application_name` of the listening connection.
pub const APPLICATION_NAME: &str = "ctxsync-listen";

/// Longest wait between two attempts to connect.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Parses a notification's payload: `<context> <head>`.
pub fn parse_payload(payload: &str) -> Option<(&str, u64)> {
    let (context, head) = payload.rsplit_once(' ')?;
    Some((context, head.parse().ok()?))
}

/// Runs until the store's runtime shuts down.
pub(crate) async fn listen_loop(url: String, wake: CommitHook) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match listen_once(&url, &wake).await {
            Ok(()) => {
                tracing::warn!("PostgreSQL listening connection ended; reconnecting");
                backoff = Duration::from_millis(100);
            }
            Err(e) => {
                tracing::warn!(error = %describe(&e), "PostgreSQL listening connection failed; retrying");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One listening connection, until it ends.
async fn listen_once(url: &str, wake: &CommitHook) -> Result<(), tokio_postgres::Error> {
    let mut config: tokio_postgres::Config = url.parse()?;
    // Named, so an operator (or a test) can find it in pg_stat_activity.
    config.application_name(APPLICATION_NAME);
    let (client, mut connection) = config.connect(tokio_postgres::NoTls).await?;
    let (tx, mut notifications) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if tx.send(n.payload().to_owned()).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "listening connection error");
                    return;
                }
                None => return,
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {}", crate::CHANNEL))
        .await?;
    // What was committed while nobody listened: every context's head, once.
    for row in client
        .query("SELECT name, revision FROM contexts", &[])
        .await?
    {
        let (name, head): (String, i64) = (row.get(0), row.get(1));
        wake(&name, head.max(0) as u64);
    }
    while let Some(payload) = notifications.recv().await {
        match parse_payload(&payload) {
            Some((context, head)) => wake(context, head),
            None => tracing::debug!(payload, "unreadable notification ignored"),
        }
    }
    drop(client);
    let _ = driver.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn payloads_parse() {
        assert_eq!(super::parse_payload("default 42"), Some(("default", 42)));
        assert_eq!(super::parse_payload("a.b-c 0"), Some(("a.b-c", 0)));
        assert_eq!(super::parse_payload("nohead"), None);
        assert_eq!(super::parse_payload("x y"), None);
    }
}
