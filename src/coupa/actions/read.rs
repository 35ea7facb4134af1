//! Reads: one record by id ([`Actions::get`]) and bounded, streaming
//! search paging ([`Actions::search`], by `id[gt]` or by `offset`).

use std::collections::VecDeque;

use futures_util::stream::{self, Stream};
use reqwest::Method;
use serde_json::Value;

use super::target::{resolve, Op, Target};
use super::Actions;
use crate::coupa::client::CoupaClient;
use crate::coupa::error::{CoupaError, MalformedKind};
use crate::coupa::exchange::{endpoint, RetryPolicy};
use crate::coupa::record::{self, Record};
use crate::redact::display_url;

/// Coupa's hard page size.
const PAGE_SIZE: usize = 50;

impl Actions {
    /// `GET /api/<object>/<id>`: one record.
    pub async fn get(&self, target: impl Into<Target>, id: u64) -> Result<Record, CoupaError> {
        let (_, path) = resolve(&target.into(), Op::Get)?;
        let path = format!("{path}/{id}");
        let v = self
            .client
            .send(Method::GET, &path, &[], None, RetryPolicy::Read)
            .await?;
        self.record(&path, v)
    }

    /// Records matching `filters` (Coupa's `attr[op]=value` pairs, sent as
    /// given), at most `limit` of them, fetched a page at a time as the
    /// stream is read.
    ///
    /// A stream rather than a callback or a `Vec`: memory stays at one
    /// page whatever the limit, the next page is only requested when the
    /// consumer wants more (a slow printer or HTTP client is backpressure,
    /// not a growing buffer), and dropping the stream stops the paging.
    ///
    /// Paging is by `id[gt]` in ascending id order, so a record edited
    /// while we page does not shift the others out of reach, and ends at
    /// the first empty page (a short page proves nothing on Coupa). If the
    /// filters set their own `order_by`, `dir`, `id[...]` bound, or a
    /// `fields` list without `id`, paging falls back to `offset`, which can
    /// skip records edited mid-search. `limit` and `offset` are the
    /// stream's to set and are refused in `filters`.
    ///
    /// Bounded: pages of at most 50 (the last one shrunk to what the limit
    /// leaves), so normally `ceil(limit / 50) + 1` requests; never more
    /// than `limit + 1`, since every page brings a new record or ends the
    /// stream (a server ignoring `id[gt]` is an error, not a loop).
    pub fn search(
        &self,
        target: impl Into<Target>,
        filters: &[(String, String)],
        limit: usize,
    ) -> Result<impl Stream<Item = Result<Record, CoupaError>> + Send + 'static, CoupaError> {
        let target = target.into();
        let (spec, path) = resolve(&target, Op::List)?;
        if limit == 0 {
            return Err(CoupaError::Invalid(format!(
                "{}: search limit must be at least 1",
                spec.name
            )));
        }
        if let Some((k, _)) = filters.iter().find(|(k, _)| k == "limit" || k == "offset") {
            return Err(CoupaError::Invalid(format!(
                "{}: `{k}` is set by the search itself (pass the limit argument; pages follow)",
                spec.name
            )));
        }
        let by_offset = filters.iter().any(|(k, v)| {
            k == "order_by"
                || k == "dir"
                || k.starts_with("id[")
                || (k == "fields" && !fields_name_id(v))
        });
        let pager = Pager {
            client: self.client.clone(),
            path,
            filters: filters.to_vec(),
            by_offset,
            last_id: None,
            offset: 0,
            remaining: limit,
            buffered: VecDeque::new(),
            done: false,
        };
        Ok(stream::try_unfold(pager, |mut p| async move {
            let next = p.next().await?;
            Ok(next.map(|r| (r, p)))
        }))
    }
}

/// Whether a `fields=[...]` value asks for `id` at the top level (paging
/// by id needs it).
fn fields_name_id(raw: &str) -> bool {
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::Array(items)) => items.iter().any(|i| i.as_str() == Some("id")),
        _ => false,
    }
}

/// The paging state behind [`Actions::search`].
struct Pager {
    client: CoupaClient,
    path: String,
    filters: Vec<(String, String)>,
    by_offset: bool,
    /// Highest id yielded so far (id paging).
    last_id: Option<u64>,
    /// Records consumed so far (offset paging).
    offset: usize,
    /// Records still allowed by the limit.
    remaining: usize,
    /// The rest of the current page.
    buffered: VecDeque<Record>,
    done: bool,
}

impl Pager {
    /// The next record, fetching a page when the buffer is empty.
    async fn next(&mut self) -> Result<Option<Record>, CoupaError> {
        if self.remaining == 0 {
            return Ok(None);
        }
        if self.buffered.is_empty() && !self.done {
            self.fetch().await?;
        }
        let Some(r) = self.buffered.pop_front() else {
            return Ok(None);
        };
        self.remaining -= 1;
        Ok(Some(r))
    }

    async fn fetch(&mut self) -> Result<(), CoupaError> {
        let size = self.remaining.min(PAGE_SIZE);
        let mut q = self.filters.clone();
        q.push(("limit".into(), size.to_string()));
        if self.by_offset {
            if self.offset > 0 {
                q.push(("offset".into(), self.offset.to_string()));
            }
        } else {
            q.push(("order_by".into(), "id".into()));
            q.push(("dir".into(), "asc".into()));
            if let Some(id) = self.last_id {
                q.push(("id[gt]".into(), id.to_string()));
            }
        }
        let page = self.client.list(&self.path, &q).await?;
        if page.is_empty() {
            self.done = true;
            return Ok(());
        }
        if self.by_offset {
            self.offset += page.len();
            self.buffered.extend(page);
            return Ok(());
        }
        let before = self.last_id;
        for r in page {
            let Some(id) = record::numeric_id(&r) else {
                return Err(self.protocol("a record without a numeric id"));
            };
            // A server that ignores `id[gt]` resends what we yielded.
            if before.is_some_and(|b| id <= b) {
                continue;
            }
            self.last_id = Some(self.last_id.map_or(id, |l| l.max(id)));
            self.buffered.push_back(r);
        }
        if self.buffered.is_empty() {
            return Err(self.protocol(
                "a page with no id above the last one (the server ignores id[gt]); set order_by to page by offset",
            ));
        }
        Ok(())
    }

    fn protocol(&self, what: &str) -> CoupaError {
        CoupaError::Malformed {
            url: endpoint(self.client.base_url(), &self.path)
                .map(|u| display_url(&u))
                .unwrap_or_else(|_| self.path.clone()),
            kind: MalformedKind::WrongShape,
            detail: format!("search paging by id got {what}"),
        }
    }
}
