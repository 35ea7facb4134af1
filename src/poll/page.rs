//! Paging one list of a window: the query (`id[gt]`, or offsets where
//! Coupa allows nothing else), one page fetched, detected and committed
//! with its position, until an empty page ends the list.

use chrono::{DateTime, Utc};
use tracing::{debug, info, warn, Instrument};

use super::backfill::Shared;
use super::{PollError, Poller};
use crate::coupa::error::CoupaError;
use crate::coupa::objects;
use crate::coupa::record::{self, query_time, Listed, Record};
use crate::event::Origin;
use crate::shutdown::Shutdown;

/// The page's records that have a usable id (rejected elements are
/// neither published nor paged by).
pub(super) fn usable_records(page: &[Listed]) -> Vec<&Record> {
    page.iter()
        .filter_map(|e| e.as_ref().ok())
        .filter(|r| record::id_problem(r).is_none())
        .collect()
}

/// The numeric ids of the page's usable records.
pub(super) fn listed_ids(page: &[Listed]) -> Vec<u64> {
    usable_records(page)
        .into_iter()
        .filter_map(record::numeric_id)
        .collect()
}

/// What one offset-mode page means for the paging position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OffsetStep {
    /// The page continues what was read: commit it, then request `next`
    /// (the offset of its last record, the next anchor) unless `end`.
    Read { max_id: u64, next: u64, end: bool },
    /// Records left the window before this offset, so the page may start
    /// past unread ones: request `retry` (smaller) instead, commit nothing.
    Shifted { retry: u64 },
    /// Nothing at offset 0: the window holds nothing more.
    End,
}

/// What one offset-mode walk remembers between its requests.
#[derive(Debug, Default)]
pub(super) struct OffsetWalk {
    /// Shifted pages in a row: each retry reaches twice as far back.
    misses: u32,
    /// The last counted page's ids.
    previous: Option<Vec<u64>>,
}

/// One list a window pages: the path and the events' origin.
pub(super) struct ListCursor {
    pub(super) path: String,
    pub(super) origin: Origin,
}

/// Where a list's paging position lives in the open window.
#[derive(Debug, Clone, Copy)]
pub(super) enum Slot {
    /// The window's own position (one list, or a parent's children).
    Whole,
    /// A backfill slice's.
    Slice(usize),
}

/// A slot's time range and position.
#[derive(Debug, Clone, Copy)]
pub(super) struct Position {
    pub(super) lo: DateTime<Utc>,
    pub(super) hi: DateTime<Utc>,
    pub(super) last_id: Option<u64>,
    pub(super) offset: Option<u64>,
}

/// A spawned request that stops when its poll stops waiting for it.
pub(super) struct AbortOnDrop<T>(pub(super) tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Poller {
    /// A path for the clock probe: the object's own list, or its parent's.
    pub(super) fn probe_path(&self) -> String {
        match self.plan.spec.and_then(|s| s.parent) {
            Some(p) => {
                objects::lookup(p.object).map_or("/api/suppliers".into(), |s| s.path.to_string())
            }
            None => self.plan.path.clone(),
        }
    }

    pub(super) fn page_query(&self, pos: &Position) -> Vec<(String, String)> {
        let mut q: Vec<(String, String)> = self
            .plan
            .filter
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        q.push(("updated_at[gt_or_eq]".into(), query_time(pos.lo)));
        q.push(("updated_at[lt]".into(), query_time(pos.hi)));
        match pos.offset {
            Some(k) => q.push(("offset".into(), k.to_string())),
            None => {
                if let Some(id) = pos.last_id {
                    q.push(("id[gt]".into(), id.to_string()));
                }
            }
        }
        q.push(("order_by".into(), "id".into()));
        q.push(("dir".into(), "asc".into()));
        q.push(("limit".into(), self.plan.page_size.to_string()));
        if !self.plan.fields.is_empty() {
            // Paging and change detection need these whatever the user picked.
            let mut fields: Vec<String> =
                vec!["id".into(), "created-at".into(), "updated-at".into()];
            for f in &self.plan.fields {
                if !fields.contains(&f.replace('_', "-")) {
                    fields.push(f.clone());
                }
            }
            let quoted: Vec<String> = fields.iter().map(|f| format!("\"{f}\"")).collect();
            q.push(("fields".into(), format!("[{}]", quoted.join(","))));
        }
        q
    }

    /// Pages one list of the window from its persisted position to its
    /// end. Returns `false` if it stopped early for shutdown.
    ///
    /// Paging is by `id[gt]` and ends on an empty page. A server that
    /// ignores `id[gt]` (or sends records without numeric ids) cannot be
    /// paged that way; rather than stop the object, the window restarts in
    /// offset paging ([`Poller::offset_step`]), which cannot skip a record
    /// however many leave the window between two requests. The object is
    /// marked as offset-paged (logged once), but every new window probes
    /// `id[gt]` again and returns to it once the server honours it.
    pub(super) async fn page_list(
        &self,
        list: &ListCursor,
        slot: Slot,
        shared: &tokio::sync::Mutex<Shared>,
        shutdown: &Shutdown,
        wake: Option<&tokio::sync::Notify>,
    ) -> Result<bool, PollError> {
        let mut walk = OffsetWalk::default();
        // This call read a page by id: an empty page after it shows the
        // server honours `id[gt]` (one ignoring it repeats that page).
        let mut paged_by_id = false;
        // The next page, requested while the current one was committed.
        let mut prefetched: Option<(Position, Result<Vec<Listed>, CoupaError>)> = None;
        loop {
            let (pos, fetched) = match prefetched.take() {
                Some(p) => p,
                None => {
                    if shutdown.is_shutdown() || !self.room(shutdown).await {
                        return Ok(false);
                    }
                    let pos = {
                        let sh = shared.lock().await;
                        if sh.halt {
                            return Ok(false);
                        }
                        sh.position(slot)
                    };
                    (pos, self.fetch(list, &pos).await)
                }
            };
            let page = fetched.map_err(|e| self.coupa_err(e))?;
            let mut sh = shared.lock().await;
            sh.report.requests += 1;
            // An offset page that proves the end of the list.
            let mut last = false;
            match pos.offset {
                None if page.is_empty() => {
                    // `id[gt]` was sent and honoured: the server pages by id.
                    if paged_by_id && sh.state.offset_paging {
                        info!(object = %self.plan.name, path = %list.path, "the server honours `id[gt]` again; back to paging by id");
                        sh.state.offset_paging = false;
                        self.store
                            .put_object_state(&self.plan.name, &sh.state)
                            .await
                            .map_err(|e| self.store_err(e))?;
                    }
                    return Ok(true);
                }
                None => match self.next_last_id(&page, pos.last_id) {
                    Ok(next) => {
                        paged_by_id = true;
                        sh.advance(slot, Some(next), None)
                    }
                    Err(why) => {
                        if sh.state.offset_paging {
                            debug!(object = %self.plan.name, path = %list.path, problem = %why, "`id[gt]` still ignored; paging this window by offset");
                        } else {
                            warn!(object = %self.plan.name, path = %list.path, problem = %why, "cannot page by id; re-reading this window by offset (each new window probes `id[gt]` again)");
                        }
                        sh.advance(slot, None, Some(0));
                        sh.state.offset_paging = true;
                        self.store
                            .put_object_state(&self.plan.name, &sh.state)
                            .await
                            .map_err(|e| self.store_err(e))?;
                        continue;
                    }
                },
                Some(k) => {
                    let step =
                        self.offset_step(&mut walk, &page, k, pos.last_id)
                            .map_err(|why| PollError::Protocol {
                                object: self.plan.name.clone(),
                                detail: format!("{} cannot be paged by offset: {why}", list.path),
                            })?;
                    match step {
                        OffsetStep::Shifted { retry } => {
                            debug!(object = %self.plan.name, path = %list.path, offset = k, retry, "records left the window before this offset; re-reading from a smaller one");
                            sh.advance(slot, pos.last_id, Some(retry));
                            continue;
                        }
                        OffsetStep::End => return Ok(true),
                        OffsetStep::Read { max_id, next, end } => {
                            last = end;
                            sh.advance(slot, Some(max_id), Some(next));
                        }
                    }
                }
            }
            // The next position is known before this page is stored:
            // request it while this one is detected and committed, so the
            // network and the store work at the same time.
            let next = sh.position(slot);
            let go_on = !sh.halt && !shutdown.is_shutdown() && !last;
            // The prefetch runs while this page commits: near the limit it
            // waits for the commit, so the pause comes no page late.
            let committing = page.len() as u64;
            let commit = async move {
                let Shared {
                    state,
                    report,
                    dense,
                    ..
                } = &mut *sh;
                report.records += page.len() as u64;
                let reseed = state.reseed_below;
                let (events, seen) = self.detect(&page, &list.origin, report, reseed)?;
                self.store
                    .commit_page(&self.plan.name, state, &seen, events)
                    .await
                    .map_err(|e| self.store_err(e))?;
                if let (Slot::Slice(i), Some(wake)) = (slot, wake) {
                    // A half-full page says the slice holds more: split it.
                    dense[i] = page.len() as u32 * 2 >= self.plan.page_size.min(50);
                    wake.notify_waiters();
                }
                // Other workers may commit while this one waits for its page.
                drop(sh);
                Ok::<(), PollError>(())
            };
            if !go_on {
                commit.await?;
                if last {
                    return Ok(true);
                }
                continue;
            }
            // A task of its own, so parsing the next page runs on another
            // thread while this one commits.
            let fetch = async {
                if !self.under_limit(committing) {
                    return None;
                }
                let client = self.client.clone();
                let (path, query) = (list.path.clone(), self.page_query(&next));
                let mut task = AbortOnDrop(tokio::spawn(
                    async move { client.list_page(&path, &query).await }
                        .instrument(tracing::Span::current()),
                ));
                Some((&mut task.0).await.unwrap_or_else(|e| {
                    Err(CoupaError::Invalid(format!(
                        "page request task failed: {e}"
                    )))
                }))
            };
            // `fetch` first: `join!` polls in order, and the commit runs
            // synchronously up to its flush, so the other order would send
            // the request only once the page is nearly stored.
            let (fetched, committed) = tokio::join!(fetch, commit);
            committed?;
            // Not fetched: the loop's own check waits for room (or shutdown).
            prefetched = fetched.map(|f| (next, f));
        }
    }

    /// Judges an offset-mode page at offset `k`, where every record with
    /// an id up to `read` (the highest id read so far) is already read.
    ///
    /// Why this cannot skip: the window's set only shrinks while it is
    /// paged (an edit moves a record's `updated-at` to or past `hi`), which
    /// shifts later records to smaller offsets by an amount we cannot see.
    /// So no offset is trusted by arithmetic: each request goes to the
    /// offset of the last record read (the anchor), and a page counts only
    /// if it starts at an id we have already read (or at offset 0). One
    /// response is one ordered snapshot, so everything after its first
    /// record is contiguous: every record with an id above `read` up to
    /// the page's last id is in it. A page that starts above `read`, or an
    /// empty one past offset 0, may sit past unread records: it is dropped
    /// and the request retried from a smaller offset (one page back, then
    /// doubling, down to 0, which always counts). The window ends at a page
    /// of at most one record (the server trims pages to no fewer than two
    /// while two remain) or an empty one at offset 0. Bounded: a counted
    /// page moves the offset forward, and a shifted one needs a record to
    /// have left the window since the previous request.
    ///
    /// Rejected elements (no usable id, unreadable) and ids that are not a
    /// u64 hold their place in the server's order, so offsets count them;
    /// a page whose first element has no numeric id cannot show its anchor
    /// and is taken as anchored.
    ///
    /// `walk` carries what one walk remembers between requests; a counted
    /// page identical to the previous one means the server ignores
    /// `offset` as well (it would serve that page forever): an error.
    pub(super) fn offset_step(
        &self,
        walk: &mut OffsetWalk,
        page: &[Listed],
        k: u64,
        read: Option<u64>,
    ) -> Result<OffsetStep, String> {
        let ids = listed_ids(page);
        if ids.windows(2).any(|w| w[0] > w[1]) {
            return Err("ids not ascending: `order_by=id&dir=asc` is ignored".into());
        }
        let first_rejected = page
            .first()
            .is_some_and(|e| e.as_ref().map_or(true, |r| record::numeric_id(r).is_none()));
        let anchored =
            k == 0 || first_rejected || ids.first().is_some_and(|&f| read.is_some_and(|r| f <= r));
        if !anchored {
            let back = u64::from(self.plan.page_size.max(1)) << walk.misses.min(32);
            walk.misses += 1;
            return Ok(OffsetStep::Shifted {
                retry: k.saturating_sub(back),
            });
        }
        if page.is_empty() {
            return Ok(OffsetStep::End);
        }
        let max = ids.last().copied().max(read).unwrap_or(0);
        if k > 0 && walk.previous.as_ref() == Some(&ids) {
            return Err(format!(
                "the server ignores both `id[gt]` and `offset` (the same page at offset {k})"
            ));
        }
        walk.previous = Some(ids);
        walk.misses = 0;
        Ok(OffsetStep::Read {
            max_id: max,
            next: k + page.len() as u64 - 1,
            end: page.len() <= 1,
        })
    }

    /// One list request at a position.
    pub(super) async fn fetch(
        &self,
        list: &ListCursor,
        pos: &Position,
    ) -> Result<Vec<Listed>, CoupaError> {
        self.client
            .list_page(&list.path, &self.page_query(pos))
            .await
    }

    /// The page's highest id, which must move past the previous one. Says
    /// why not when the page shows the server ignores `id[gt]` or the id
    /// order, or has records without numeric ids: paging on would loop
    /// forever or skip records. Rejected elements (no usable id,
    /// unreadable) are never published, so they neither move nor block
    /// the position; a page of nothing else cannot be paged by id.
    pub(super) fn next_last_id(&self, page: &[Listed], prev: Option<u64>) -> Result<u64, String> {
        // An id that is not a u64 (a string, one beyond 2^64) is published
        // as sent but cannot position the page; the numeric ones around it
        // do. Only a page without any numeric id cannot be paged by id.
        let ids = listed_ids(page);
        if ids.is_empty() {
            return Err("no record on the page has a numeric `id`".into());
        }
        // Equal neighbours (a row served twice) are harmless: detection
        // drops the repeat. Descending ones mean the order is not by id.
        if ids.windows(2).any(|w| w[0] > w[1]) {
            return Err("ids not ascending: `order_by=id&dir=asc` is ignored".into());
        }
        let max = *ids.last().expect("ids is not empty");
        match prev {
            Some(p) if max <= p => Err(format!(
                "the `id[gt]` filter is ignored (page ends at id {max}, not after {p})"
            )),
            _ => Ok(max),
        }
    }
}
