//! `barkeep quality` as a service: the checklist's daily quality query (good
//! bars, `quality_score >= 1`, per symbol and timeframe) plus the share of
//! expected 1m minutes actually present under the bars, so a week built
//! from five thin days does not read as a 100% good week, and how many bars
//! those minutes allow to be good (what the data allows, whatever the ladder
//! did with it).

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Duration, Utc};
use tokio_postgres::Client;

use crate::model::{Symbol, Timeframe};

/// Where the window of bars starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// This long before the database's clock (the checklist's 24 hours).
    Ago(Duration),
    /// A fixed instant.
    At(DateTime<Utc>),
    /// Every stored bar.
    All,
}

impl Since {
    /// Parse `24h`, `90m`, `7d`, `2w`, `all`, or an instant (RFC 3339 or a date).
    pub fn parse(raw: &str) -> Result<Self> {
        let s = raw.trim();
        if s.eq_ignore_ascii_case("all") {
            return Ok(Since::All);
        }
        if let Some(unit) = s.chars().last().filter(|c| c.is_ascii_alphabetic()) {
            let digits = &s[..s.len() - 1];
            if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) {
                let n: i64 = digits
                    .parse()
                    .with_context(|| format!("{raw:?} is too large"))?;
                let d = match unit {
                    'm' => Duration::try_minutes(n),
                    'h' => Duration::try_hours(n),
                    'd' => Duration::try_days(n),
                    'w' => Duration::try_weeks(n),
                    _ => None,
                };
                return match d {
                    Some(d) => Ok(Since::Ago(d)),
                    None => bail!("unknown duration {raw:?}: use a number with m, h, d or w (24h, 7d), a date, or all"),
                };
            }
        }
        match crate::model::calendar::parse_instant(s) {
            Ok(t) => Ok(Since::At(t)),
            Err(_) => bail!("unknown duration {raw:?}: use a number with m, h, d or w (24h, 7d), a date, or all"),
        }
    }
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct QualitySettings {
    pub since: Since,
    pub symbol: Option<Symbol>,
    pub timeframe: Option<Timeframe>,
    /// Percentages below this are flagged (the checklist's 90).
    pub threshold_pct: f64,
}

impl Default for QualitySettings {
    fn default() -> Self {
        QualitySettings {
            since: Since::Ago(Duration::hours(24)),
            symbol: None,
            timeframe: None,
            threshold_pct: 90.0,
        }
    }
}

/// Quality of one symbol and timeframe.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QualityLine {
    pub symbol: String,
    pub timeframe: String,
    pub total_bars: i64,
    /// Bars with `quality_score >= 1`.
    pub good_bars: i64,
    /// Bars with `quality_score <= 0`.
    pub poor_bars: i64,
    /// The checklist's `quality_pct`.
    pub quality_pct: f64,
    /// 1m bars present under these bars.
    pub minutes_present: i64,
    /// 1m bars full buckets would have.
    pub minutes_expected: i64,
    pub minute_coverage_pct: f64,
    /// Bars whose 1m minutes present would make a good bar on their own (at
    /// least 4 in 5 of those expected, as `agg_quality` judges quality 1):
    /// the good bars the data allows.
    pub minutes_allow_good: i64,
    /// `minutes_allow_good` as a share of the bars.
    pub minutes_allow_good_pct: f64,
    /// `quality_pct` below the threshold.
    pub low_quality: bool,
    /// `minute_coverage_pct` below the threshold.
    pub low_coverage: bool,
}

/// What `barkeep quality` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QualityReport {
    pub from: Option<DateTime<Utc>>,
    pub threshold_pct: f64,
    pub lines: Vec<QualityLine>,
}

impl QualityReport {
    /// Whether any line is below the threshold.
    pub fn flagged(&self) -> bool {
        self.lines.iter().any(|l| l.low_quality || l.low_coverage)
    }
}

/// The newest 1m bar of any symbol with a task, and the database's clock:
/// where a window "back from the newest data" ends.
pub async fn newest_1m_and_now(client: &Client) -> Result<(Option<DateTime<Utc>>, DateTime<Utc>)> {
    let row = client
        .query_one(
            &format!(
                "SELECT max(latest_1m), now() FROM ({}) n",
                super::status::NEWEST_1M_OF_TASKS
            ),
            &[&None::<String>],
        )
        .await
        .context("finding the newest 1m bar")?;
    Ok((row.get(0), row.get(1)))
}

/// Run the quality query.
pub async fn quality(client: &Client, settings: &QualitySettings) -> Result<QualityReport> {
    crate::migrate::require_migrated(client).await?;
    let now: DateTime<Utc> = client
        .query_one("SELECT now()", &[])
        .await
        .context("reading the database clock")?
        .get(0);
    let from = match settings.since {
        Since::Ago(d) => Some(now - d),
        Since::At(t) => Some(t),
        Since::All => None,
    };
    let symbol = settings.symbol.as_ref().map(Symbol::as_str);
    let timeframe = settings.timeframe.map(Timeframe::as_str);
    // The checklist's query, grouped the same way, with the minutes present
    // under each bar counted through the 1m index. The calendar comes from
    // the registry row joined once per bar, as agg_symbol_calendar reads it,
    // rather than from a PL/pgSQL call per bar.
    let rows = client
        .query(
            "SELECT d.canonical_symbol, d.timeframe, count(*),
                    count(*) FILTER (WHERE d.quality_score >= 1),
                    count(*) FILTER (WHERE d.quality_score <= 0),
                    round(100.0 * count(*) FILTER (WHERE d.quality_score >= 1) / count(*), 1)::float8,
                    coalesce(sum(m.present), 0)::bigint,
                    sum(e.minutes)::bigint,
                    count(*) FILTER (WHERE 5 * m.present >= 4 * e.minutes)
             FROM derived_data_bars d
             LEFT JOIN core_asset_registry_all r ON r.canonical_symbol = d.canonical_symbol
             CROSS JOIN LATERAL (
               SELECT d.expected_candles * CASE d.source_timeframe WHEN '1m' THEN 1 WHEN '5m' THEN 5
                          WHEN '15m' THEN 15 WHEN '1h' THEN 60 WHEN '4h' THEN 240 WHEN '1d' THEN 1440
                          ELSE 0 END AS minutes
             ) e
             CROSS JOIN LATERAL (
               SELECT count(*) AS present FROM data_bars b
               WHERE b.canonical_symbol = d.canonical_symbol AND b.timeframe = '1m'
                 AND b.ts_utc >= d.ts_utc
                 AND b.ts_utc < agg_bucket_end(agg_calendar(coalesce(r.asset_class, 'crypto')),
                                               d.timeframe, d.ts_utc)
             ) m
             WHERE d.deleted_at IS NULL AND NOT d.is_partial
               AND ($1::timestamptz IS NULL OR d.ts_utc >= $1)
               AND ($2::text IS NULL OR d.canonical_symbol = $2)
               AND ($3::text IS NULL OR d.timeframe = $3)
             GROUP BY d.canonical_symbol, d.timeframe",
            &[&from, &symbol, &timeframe],
        )
        .await
        .context("running the quality query")?;
    let mut lines: Vec<QualityLine> = rows
        .iter()
        .map(|r| {
            let present: i64 = r.get(6);
            let expected: i64 = r.get(7);
            let coverage = if expected > 0 {
                (1000.0 * present as f64 / expected as f64).round() / 10.0
            } else {
                0.0
            };
            let quality_pct: f64 = r.get(5);
            let total: i64 = r.get(2);
            let allow_good: i64 = r.get(8);
            QualityLine {
                symbol: r.get(0),
                timeframe: r.get(1),
                total_bars: total,
                good_bars: r.get(3),
                poor_bars: r.get(4),
                quality_pct,
                minutes_present: present,
                minutes_expected: expected,
                minute_coverage_pct: coverage,
                minutes_allow_good: allow_good,
                minutes_allow_good_pct: (1000.0 * allow_good as f64 / total as f64).round() / 10.0,
                low_quality: quality_pct < settings.threshold_pct,
                low_coverage: coverage < settings.threshold_pct,
            }
        })
        .collect();
    let rank = |l: &QualityLine| {
        Timeframe::parse(&l.timeframe)
            .map(Timeframe::rank)
            .unwrap_or(99)
    };
    lines.sort_by(|a, b| a.symbol.cmp(&b.symbol).then(rank(a).cmp(&rank(b))));
    Ok(QualityReport {
        from,
        threshold_pct: settings.threshold_pct,
        lines,
    })
}
