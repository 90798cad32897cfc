//! The errors the whole program shares, beneath every service: the user's
//! mistake ([`UsageError`], exit code 2) and which database failures are
//! transient (retried soon) rather than hard (counted toward the task's
//! hard-fail streak). Part of the base layer: it imports nothing of the crate.

/// A mistake in what the user asked for (an unknown symbol, a bad
/// combination of flags); the command line exits 2 for it, as for clap's own
/// usage errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Whether an error is worth retrying soon rather than counting as a hard
/// failure: a lost connection (SQLSTATE class 08, or no SQLSTATE at all: the
/// socket failed underneath), serialization failure (40001), deadlock
/// (40P01), a cancelled statement or statement timeout (57014), a lock
/// timeout (55P03), and the server shutting down or starting (57P01-57P03).
pub fn is_transient(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        if let Some(pg) = cause.downcast_ref::<tokio_postgres::Error>() {
            if pg.is_closed() {
                return true;
            }
            return match pg.code() {
                Some(code) => is_transient_sqlstate(code.code()),
                // No SQL state: the socket or protocol failed underneath us.
                None => true,
            };
        }
        cause.downcast_ref::<std::io::Error>().is_some()
    })
}

/// The SQLSTATEs of [`is_transient`].
pub fn is_transient_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || matches!(
            code,
            "40001" | "40P01" | "57014" | "55P03" | "57P01" | "57P02" | "57P03"
        )
}
