//! Nested objects: the walk over every parent supplier, paging each
//! one's children, at most `parent_budget` parents per poll.

use tracing::warn;

use super::backfill::Shared;
use super::page::{listed_ids, ListCursor, OffsetStep, OffsetWalk, Slot};
use super::{PollError, Poller};
use crate::coupa::error::CoupaError;
use crate::coupa::objects;
use crate::shutdown::Shutdown;

impl Poller {
    /// Walks the parents of a nested object, paging each one's children.
    /// Returns `true` when every parent is done (the window is complete).
    pub(super) async fn page_parents(
        &self,
        parent_object: &str,
        shared: &tokio::sync::Mutex<Shared>,
        shutdown: &Shutdown,
    ) -> Result<bool, PollError> {
        let parent_path = objects::lookup(parent_object)
            .map(|s| s.path.to_string())
            .unwrap_or_else(|| format!("/api/{parent_object}"));
        let spec = self
            .plan
            .spec
            .expect("nested objects come from the catalogue");
        // Parents fetched but not yet visited; in memory only, since a
        // resumed window refetches them after `parents_done`.
        let mut queue = std::collections::VecDeque::new();
        let mut visited = 0u32;
        let mut walk = OffsetWalk::default();
        loop {
            let (parent, done) = {
                let mut sh = shared.lock().await;
                let w = sh.window();
                (w.parent, w.parents_done)
            };
            if let Some(pid) = parent {
                let path = spec.list_path(Some(&pid.to_string()));
                let list = ListCursor {
                    origin: self.origin(path.clone()),
                    path,
                };
                match self
                    .page_list(&list, Slot::Whole, shared, shutdown, None)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => return Ok(false),
                    // A 404 on the child list skips the parent only if the
                    // parent itself is gone; otherwise it is an error like
                    // any other, and the next poll retries this parent.
                    Err(
                        e @ PollError::Coupa {
                            source: CoupaError::NotFound { .. },
                            ..
                        },
                    ) => {
                        let parent_url = format!("{parent_path}/{pid}");
                        match self.client.get_json(&parent_url, &[]).await {
                            Err(CoupaError::NotFound { .. }) => {
                                warn!(object = %self.plan.name, parent = pid, "parent not found; skipping it")
                            }
                            Ok(_) => {
                                warn!(object = %self.plan.name, parent = pid, "children list answered 404 but the parent exists; retrying it next poll");
                                return Err(e);
                            }
                            Err(other) => return Err(self.coupa_err(other)),
                        }
                    }
                    Err(e) => return Err(e),
                }
                let mut sh = shared.lock().await;
                let offset_paging = sh.state.offset_paging;
                let w = sh.window();
                w.parents_done = Some(pid);
                w.parent = queue.pop_front();
                w.last_id = None;
                w.offset = offset_paging.then_some(0);
                self.store
                    .put_object_state(&self.plan.name, &sh.state)
                    .await
                    .map_err(|e| self.store_err(e))?;
                visited += 1;
                if visited >= self.plan.parent_budget || shutdown.is_shutdown() {
                    return Ok(false);
                }
                continue;
            }
            let parent_offset = shared.lock().await.window().parent_offset;
            let mut q = vec![
                ("order_by".to_string(), "id".to_string()),
                ("dir".to_string(), "asc".to_string()),
                // No `fields=["id"]`: smaller pages, but a server that
                // rejects the parameter would stop nested objects entirely.
                ("limit".to_string(), "50".to_string()),
            ];
            match (parent_offset, done) {
                (Some(k), _) => q.push(("offset".into(), k.to_string())),
                (None, Some(d)) => q.push(("id[gt]".into(), d.to_string())),
                (None, None) => {}
            }
            let parents = self
                .client
                .list_page(&parent_path, &q)
                .await
                .map_err(|e| self.coupa_err(e))?;
            let mut sh = shared.lock().await;
            sh.report.requests += 1;
            let protocol = |why: String| PollError::Protocol {
                object: self.plan.name.clone(),
                detail: format!("cannot walk the parents at {parent_path}: {why}"),
            };
            let Some(k) = parent_offset else {
                if parents.is_empty() {
                    return Ok(true);
                }
                if let Err(why) = self.next_last_id(&parents, done) {
                    // The same fallback as top-level lists: walk the
                    // parents by offset (see `offset_step`), which cannot
                    // skip one.
                    warn!(object = %self.plan.name, path = %parent_path, problem = %why, "cannot walk the parents by id; walking them by offset");
                    sh.window().parent_offset = Some(0);
                    continue;
                }
                queue.extend(listed_ids(&parents));
                sh.window().parent = queue.pop_front();
                continue;
            };
            match self
                .offset_step(&mut walk, &parents, k, done)
                .map_err(protocol)?
            {
                OffsetStep::End => return Ok(true),
                OffsetStep::Shifted { retry } => {
                    sh.window().parent_offset = Some(retry);
                }
                OffsetStep::Read { next, end, .. } => {
                    let fresh: Vec<u64> = listed_ids(&parents)
                        .into_iter()
                        .filter(|id| done.is_none_or(|d| *id > d))
                        .collect();
                    if fresh.is_empty() && end {
                        return Ok(true);
                    }
                    queue.extend(fresh);
                    let w = sh.window();
                    w.parent_offset = Some(next);
                    w.parent = queue.pop_front();
                }
            }
        }
    }
}
