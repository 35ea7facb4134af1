//! What the bench binaries share: sizes from the environment, the
//! process's memory from `/proc`, and filling the simulator with
//! purchase orders.
//! Test helpers (configs, the daemon) come from `tests/it/support`, not here.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use coupa_sim::SimHandle;
use serde_json::Value;

/// `name` from the environment as a number, else `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

fn status_kib(key: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(f64::NAN)
}

/// Resident set size now, MiB.
pub fn rss_mib() -> f64 {
    status_kib("VmRSS:") / 1024.0
}

/// Peak resident set size since start or the last [`reset_peak`], MiB.
pub fn peak_rss_mib() -> f64 {
    status_kib("VmHWM:") / 1024.0
}

/// Resets the kernel's peak-RSS mark to the current RSS, so the next
/// [`peak_rss_mib`] covers only what follows.
pub fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The machine, for the figures' heading: CPUs and memory.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0 / 1024.0);
    format!("{cpus} CPUs, {mem:.0} GiB RAM")
}

/// Creates `n` purchase orders as the simulator generates them (1–3
/// order lines, custom fields; ~2.1 KB of JSON on average), with `extra(i)`
/// laid over (e.g. timestamps), printing progress for big runs. Returns
/// the mean JSON size of the records, bytes.
pub fn create_pos(sim: &SimHandle, n: usize, extra: impl Fn(u64) -> Value) -> usize {
    let started = Instant::now();
    let mut last_note = Instant::now();
    let mut sizes = 0usize;
    for i in 1..=n as u64 {
        let rec = sim.create("purchase_orders", extra(i));
        // Sizing every record would double the work: sample one in 10.
        if i % 10 == 1 {
            sizes += serde_json::to_vec(&rec).map_or(0, |b| b.len());
        }
        if last_note.elapsed() > Duration::from_secs(10) {
            eprintln!("  … {i} of {n} records created");
            last_note = Instant::now();
        }
    }
    eprintln!(
        "  {n} purchase orders created in the simulator in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    sizes / n.div_ceil(10).max(1)
}

/// Gives the heap's free pages back to the kernel (glibc's `malloc_trim`),
/// so RSS counts live data only and a peak measured after it shows new
/// use, not a reuse of what an earlier stage freed.
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: glibc's malloc_trim takes a size and touches only the
        // allocator's own free lists; safe to call at any time.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// `count / elapsed` with a guard against a zero duration.
pub fn per_sec(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}
