//! Poll schedules: cron expressions (5 or 6 fields, Unix day-of-week)
//! translated into what the `cron` crate reads, or fixed intervals.

use std::str::FromStr;

use chrono::{DateTime, Utc};

/// A poll schedule: cron with seconds.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// As the user wrote it (for messages).
    pub expr: String,
    /// Parsed.
    pub cron: cron::Schedule,
}

impl Schedule {
    /// Parses a 6/7-field cron (seconds first), or translates a 5-field Unix
    /// cron (adds `0` seconds; numeric day-of-week 0-7 mapped to names, since
    /// the cron crate counts 1 = Sunday).
    pub fn parse(expr: &str) -> Result<Schedule, String> {
        let fields: Vec<&str> = expr.split_whitespace().collect();
        let translated = if fields.len() == 5 {
            format!(
                "0 {} {} {} {} {}",
                fields[0],
                fields[1],
                fields[2],
                fields[3],
                unix_dow(fields[4])?
            )
        } else {
            expr.trim().to_string()
        };
        let cron = cron::Schedule::from_str(&translated)
            .map_err(|e| format!("`{expr}` is not a valid cron schedule ({e}); write `sec min hour dom month dow`, e.g. `*/30 * * * * *`"))?;
        if cron.upcoming(Utc).next().is_none() {
            return Err(format!("`{expr}` never fires"));
        }
        Ok(Schedule {
            expr: expr.to_string(),
            cron,
        })
    }

    /// The next fire time after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.after(&after).next()
    }

    /// When a poller whose last success was at `last` counts as behind:
    /// three schedules on — the first fire after `last`, plus twice the
    /// gap to the fire after it. Irregular crons (weekdays only) are judged
    /// by their own gaps, so a quiet weekend is not "behind".
    pub fn overdue_at(&self, last: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut it = self.cron.after(&last);
        let (a, b) = (it.next()?, it.next()?);
        Some(a + (b - a) * 2)
    }
}

/// Unix day-of-week numbers (0/7 = Sunday) to names, which the cron crate
/// reads unambiguously.
pub(crate) fn unix_dow(field: &str) -> Result<String, String> {
    const NAMES: [&str; 8] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let map = |tok: &str| -> Result<String, String> {
        if tok.chars().all(|c| c.is_ascii_digit()) {
            let n: usize = tok
                .parse()
                .map_err(|_| format!("bad day of week `{tok}`"))?;
            NAMES
                .get(n)
                .map(|s| s.to_string())
                .ok_or_else(|| format!("day of week `{tok}` is out of range 0-7"))
        } else {
            Ok(tok.to_string())
        }
    };
    field
        .split(',')
        .map(|part| {
            let (range, step) = match part.split_once('/') {
                Some((r, s)) => (r, Some(s)),
                None => (part, None),
            };
            let range = match range.split_once('-') {
                Some((a, b)) => format!("{}-{}", map(a)?, map(b)?),
                None if range == "*" => "*".to_string(),
                None => map(range)?,
            };
            Ok(match step {
                Some(s) => format!("{range}/{s}"),
                None => range,
            })
        })
        .collect::<Result<Vec<_>, String>>()
        .map(|v| v.join(","))
}
