//! `coupa-changefeed state show|reset|reset-sink`: the per-object
//! high-water marks and open windows, the sink cursors, and rewinding them.

use anyhow::Context;
use clap::Subcommand;

use super::ConfigArg;
use crate::config::Settings;
use crate::coupa::record::{parse_timestamp, rfc3339};
use crate::store::Store;

#[derive(Subcommand)]
pub enum StateAction {
    /// Print each object's high-water mark and open window.
    Show {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Rewind one object so the next run replays from TIME (or from its start_from).
    Reset {
        /// Object name.
        object: String,
        /// RFC 3339 time to replay from.
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Move one sink's cursor: `oldest` acknowledges events it missed while
    /// not configured; SEQ delivers every held event after SEQ to it again.
    ResetSink {
        /// Sink name.
        sink: String,
        /// `oldest` (the default) or a sequence number.
        #[arg(long, default_value = "oldest")]
        to: String,
        #[command(flatten)]
        config: ConfigArg,
    },
}

pub async fn run(action: StateAction) -> anyhow::Result<()> {
    match action {
        StateAction::Show { config } => {
            let settings = Settings::load(config.path())?;
            let store = Store::open(&settings.state.dir)?;
            let states = store.object_states()?;
            println!("{:<28} {:<22} OPEN WINDOW", "OBJECT", "HIGH-WATER MARK");
            for (name, s) in states {
                let hwm = s.hwm.map(rfc3339).unwrap_or_else(|| "-".into());
                let window = s
                    .window
                    .map(|w| {
                        format!(
                            "[{}, {}) after id {}",
                            rfc3339(w.lo),
                            rfc3339(w.hi),
                            w.last_id.map_or("-".into(), |i| i.to_string())
                        )
                    })
                    .unwrap_or_else(|| "-".into());
                println!("{name:<28} {hwm:<22} {window}");
            }
            println!("outbox: {} events waiting", store.outbox_len());
            println!(
                "\n{:<24} {:>12} {:>10} {:>12}",
                "SINK", "CURSOR", "BACKLOG", "DEAD LETTERS"
            );
            for sink in &settings.sinks {
                let name = sink.name();
                let cursor = store.cursor(&name)?;
                let backlog = store.sink_backlog(&name)?;
                let dead = store.dead_letters(Some(&name))?.len();
                let missed = store
                    .missed(&name)?
                    .map(|m| format!("  missed {}..={} (state reset-sink)", m.from, m.to))
                    .unwrap_or_default();
                println!("{name:<24} {cursor:>12} {backlog:>10} {dead:>12}{missed}");
            }
            Ok(())
        }
        StateAction::Reset { object, to, config } => {
            let settings = Settings::load(config.path())?;
            if !settings.objects.iter().any(|o| o.name == object) {
                anyhow::bail!("object `{object}` is not configured in [[objects]]");
            }
            let to = match to {
                Some(t) => Some(
                    parse_timestamp(&t)
                        .with_context(|| format!("--to `{t}` is not an RFC 3339 time"))?,
                ),
                None => None,
            };
            let store = Store::open(&settings.state.dir)?;
            store.reset_object(&object, to).await?;
            match to {
                Some(t) => println!("{object}: will replay from {}", rfc3339(t)),
                None => println!("{object}: reset; will start from its configured start_from"),
            }
            Ok(())
        }
        StateAction::ResetSink { sink, to, config } => {
            let settings = Settings::load(config.path())?;
            if !settings.sinks.iter().any(|c| c.name() == sink) {
                let names: Vec<String> = settings.sinks.iter().map(|c| c.name()).collect();
                anyhow::bail!(
                    "sink `{sink}` is not configured (configured: {})",
                    names.join(", ")
                );
            }
            let store = Store::open(&settings.state.dir)?;
            let floor = store.oldest_held()? - 1;
            let last = store.last_seq();
            if to == "oldest" {
                match store.acknowledge_missed(&sink).await? {
                    Some(m) => println!(
                        "{sink}: events {}..={} are gone and will not be sent; acknowledged (cursor at {})",
                        m.from,
                        m.to,
                        store.cursor(&sink)?
                    ),
                    None => println!(
                        "{sink}: missed nothing; cursor left at {}",
                        store.cursor(&sink)?
                    ),
                }
                return Ok(());
            }
            let n: u64 = to.parse().with_context(|| {
                format!("--to `{to}` is neither `oldest` nor a sequence number")
            })?;
            if n > last {
                anyhow::bail!("--to {n} is beyond the last event ({last})");
            }
            if n < floor {
                anyhow::bail!(
                    "--to {n} is below the oldest event still held ({}): the ones before were released; use --to oldest",
                    floor + 1
                );
            }
            store.reset_cursor(&sink, n, true).await?;
            println!(
                "{sink}: cursor at {n}; the {} held event(s) after it will be delivered to it again",
                last - n
            );
            Ok(())
        }
    }
}
