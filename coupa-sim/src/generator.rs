//! The background change generator: at `change_rate` events per second it
//! creates new records or edits existing ones of `change_objects`, each a
//! new version in the log, so the daemon has a live instance to follow.
//! Reads the rate on every tick, so `set_change_rate` acts at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::{data, lock, Shared};
use coupa_model::objects::{self, ObjectSpec};

/// Share of generated changes that are creates (the rest are updates).
const CREATE_SHARE: f64 = 0.3;

pub(super) async fn run(shared: Arc<Shared>) {
    let seed = lock(&shared.store).seed_for_generator();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Instant::now();
    // Changes owed: accumulates rate × elapsed, so any rate (0.1/s or
    // 1000/s) comes out right on a fixed tick.
    let mut owed = 0.0f64;
    loop {
        tick.tick().await;
        let now = Instant::now();
        let elapsed = now.duration_since(last).as_secs_f64();
        last = now;
        let (rate, names) = {
            let s = lock(&shared.settings);
            (s.change_rate, s.change_objects.clone())
        };
        let specs: Vec<&'static ObjectSpec> =
            names.iter().filter_map(|n| objects::lookup(n)).collect();
        if rate <= 0.0 || specs.is_empty() {
            owed = 0.0;
            continue;
        }
        // Cap at one second's worth so a stalled runtime does not burst.
        owed = (owed + rate * elapsed).min(rate.max(1.0));
        while owed >= 1.0 {
            owed -= 1.0;
            let spec = *specs.choose(&mut rng).expect("non-empty");
            change(&shared, spec, &mut rng);
        }
    }
}

/// One generated change to one object.
fn change(shared: &Shared, spec: &'static ObjectSpec, rng: &mut StdRng) {
    let now = shared.now();
    let mut store = lock(&shared.store);
    let ids: Vec<u64> = store.table(spec.name).keys().copied().collect();
    if ids.is_empty() || rng.random_bool(CREATE_SHARE) {
        let mut fields = json!({});
        if let Some(p) = spec.parent {
            let parents: Vec<u64> = store.table(p.object).keys().copied().collect();
            fields["_parent_id"] = Value::from(parents.choose(rng).copied().unwrap_or(1));
        }
        let _ = store.create(spec, fields.as_object().cloned().unwrap_or_default(), now);
    } else {
        let id = *ids.choose(rng).expect("non-empty");
        let Some(record) = store.get(spec, id) else {
            return;
        };
        let patch = data::mutate(spec, &record, rng);
        let _ = store.update(spec, id, patch, now);
    }
}
