//! A test hook: pause one symbol's chunk of one timeframe between reading
//! its sources and writing its bars, so a test can commit a late row in
//! exactly that window (docs/DESIGN.md, the race of late data). Unarmed,
//! it costs one uncontended mutex per chunk.

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::model::Timeframe;

/// An armed pause: the chunk signals `reached` and waits for `resume`.
pub struct Pause {
    pub symbol: String,
    pub timeframe: Timeframe,
    pub reached: Arc<Notify>,
    pub resume: Arc<Notify>,
}

static ARMED: Mutex<Vec<Pause>> = Mutex::new(Vec::new());

/// Arm a one-shot pause for the next chunk of `symbol` `timeframe`.
pub fn arm(symbol: &str, timeframe: Timeframe) -> (Arc<Notify>, Arc<Notify>) {
    let reached = Arc::new(Notify::new());
    let resume = Arc::new(Notify::new());
    if let Ok(mut armed) = ARMED.lock() {
        armed.push(Pause {
            symbol: symbol.to_string(),
            timeframe,
            reached: reached.clone(),
            resume: resume.clone(),
        });
    }
    (reached, resume)
}

/// Where a chunk may be paused.
pub(crate) async fn point(symbol: &str, timeframe: Timeframe) {
    let pause = match ARMED.lock() {
        Ok(mut armed) => armed
            .iter()
            .position(|p| p.symbol == symbol && p.timeframe == timeframe)
            .map(|i| armed.swap_remove(i)),
        Err(_) => None,
    };
    if let Some(p) = pause {
        p.reached.notify_one();
        p.resume.notified().await;
    }
}
