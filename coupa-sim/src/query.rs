//! Coupa's list-query language as the simulator understands it: filters
//! `attr[op]=value` (and `assoc[attr][op]=value` into nested objects and
//! arrays), `limit` (clamped to 50), `offset`, `order_by`, `dir` and
//! `fields=[...]`. Parsing and evaluation only; the store applies it.
//!
//! Comparison rules: timestamps as instants (any offset, `Z`, or a bare
//! date = midnight UTC), numbers (and decimal strings) numerically, else
//! strings. Like SQL, a missing/null value satisfies no operator but `blank`.

use std::cmp::Ordering;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Map, Value};

use coupa_model::record::parse_timestamp;

/// Coupa's hard page size: `limit` can only shrink it.
pub const MAX_LIMIT: usize = 50;

/// Parameters that shape the response rather than filter it.
const RESERVED: &[&str] = &[
    "limit",
    "offset",
    "order_by",
    "dir",
    "fields",
    "return_object",
    "filter",
    "show_deleted_lines",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Gt,
    Lt,
    GtOrEq,
    LtOrEq,
    NotEq,
    In,
    NotIn,
    Contains,
    StartsWith,
    EndsWith,
    Blank,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "gt" => Op::Gt,
            "lt" => Op::Lt,
            "gt_or_eq" => Op::GtOrEq,
            "lt_or_eq" => Op::LtOrEq,
            "not_eq" => Op::NotEq,
            "in" => Op::In,
            "not_in" => Op::NotIn,
            "contains" => Op::Contains,
            "starts_with" => Op::StartsWith,
            "ends_with" => Op::EndsWith,
            "blank" => Op::Blank,
            _ => return None,
        })
    }
}

/// A query value, pre-parsed once per request.
#[derive(Debug, Clone)]
struct QVal {
    raw: String,
    time: Option<DateTime<Utc>>,
    num: Option<f64>,
}

impl QVal {
    fn new(raw: &str) -> QVal {
        let time = parse_timestamp(raw).or_else(|| {
            NaiveDate::parse_from_str(raw.trim(), "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc())
        });
        QVal {
            raw: raw.to_string(),
            time,
            num: raw.trim().parse().ok(),
        }
    }
}

#[derive(Debug, Clone)]
struct Filter {
    /// Attribute path, e.g. `["updated_at"]` or `["supplier", "name"]`.
    path: Vec<String>,
    op: Op,
    values: Vec<QVal>,
}

/// A parsed list query.
#[derive(Debug, Clone)]
pub struct Query {
    filters: Vec<Filter>,
    order_by: Option<String>,
    desc: bool,
    pub limit: usize,
    pub offset: usize,
    fields: Option<Value>,
}

impl Default for Query {
    fn default() -> Self {
        Query {
            filters: Vec::new(),
            order_by: None,
            desc: false,
            limit: MAX_LIMIT,
            offset: 0,
            fields: None,
        }
    }
}

/// Splits `a[b][c]` into `["a","b","c"]`; `None` if the brackets are malformed.
fn split_key(key: &str) -> Option<Vec<String>> {
    let (head, mut rest) = match key.find('[') {
        Some(i) => (&key[..i], &key[i..]),
        None => (key, ""),
    };
    let mut parts = vec![head.to_string()];
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[')?;
        let end = inner.find(']')?;
        parts.push(inner[..end].to_string());
        rest = &inner[end + 1..];
    }
    (!head.is_empty()).then_some(parts)
}

/// Datetime-looking attributes: a value that is not a datetime is a client
/// bug (an unencoded `+` arrives as a space), so say so instead of
/// silently matching nothing.
fn is_time_attr(name: &str) -> bool {
    let n = name.replace('_', "-");
    n.ends_with("-at") || n.ends_with("-date") || n.ends_with("-time")
}

impl Query {
    /// Parses a raw (percent-encoded) query string. Errors name the bad parameter.
    pub fn parse(raw: &str) -> Result<Query, String> {
        let mut q = Query::default();
        for (k, v) in url::form_urlencoded::parse(raw.as_bytes()) {
            match k.as_ref() {
                // Non-numbers and 0 fall back to the default, as a lenient Rails app would.
                "limit" => {
                    q.limit = v
                        .trim()
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .unwrap_or(MAX_LIMIT)
                        .min(MAX_LIMIT)
                }
                "offset" => q.offset = v.trim().parse().unwrap_or(0),
                "order_by" => q.order_by = Some(v.trim().to_string()).filter(|s| !s.is_empty()),
                "dir" => q.desc = v.trim().eq_ignore_ascii_case("desc"),
                "fields" => {
                    let f: Value = serde_json::from_str(&v)
                        .map_err(|e| format!("fields: not a JSON array ({e})"))?;
                    if !f.is_array() {
                        return Err("fields: must be a JSON array".into());
                    }
                    q.fields = Some(f);
                }
                k if RESERVED.contains(&k) => {}
                k => q.filters.push(Self::filter(k, &v)?),
            }
        }
        Ok(q)
    }

    fn filter(key: &str, value: &str) -> Result<Filter, String> {
        let mut path = split_key(key).ok_or_else(|| format!("{key}: malformed parameter name"))?;
        let op = match path.last().and_then(|l| Op::parse(l)) {
            Some(op) if path.len() > 1 => {
                path.pop();
                op
            }
            _ => Op::Eq,
        };
        let values: Vec<QVal> = match op {
            Op::In | Op::NotIn => value.split(',').map(QVal::new).collect(),
            _ => vec![QVal::new(value)],
        };
        if op == Op::Blank && !matches!(value, "true" | "false") {
            return Err(format!("{key}: blank takes true or false, got {value:?}"));
        }
        let attr = path.last().expect("split_key returns a head");
        if !matches!(op, Op::Blank | Op::Contains | Op::StartsWith | Op::EndsWith)
            && is_time_attr(attr)
            && values.iter().any(|v| v.time.is_none())
        {
            return Err(format!(
                "{key}: {value:?} is not an ISO-8601 datetime (percent-encode '+' as %2B)"
            ));
        }
        Ok(Filter { path, op, values })
    }

    /// When results come in ascending id order (the default), the lowest id
    /// any result can have, from `id[gt]` / `id[gt_or_eq]` filters: lets the
    /// store start its scan there instead of at the first record.
    pub fn ascending_id_floor(&self) -> Option<Option<u64>> {
        if self.desc || self.order_by.as_deref().is_some_and(|k| k != "id") {
            return None;
        }
        let floor = self
            .filters
            .iter()
            .filter(|f| f.path.len() == 1 && f.path[0] == "id")
            .filter_map(|f| {
                let n = f.values.first()?.num?;
                match f.op {
                    Op::Gt => Some(n.floor() as u64 + 1),
                    Op::GtOrEq => Some(n.ceil() as u64),
                    _ => None,
                }
            })
            .max();
        Some(floor)
    }

    /// True if the record satisfies every filter (AND).
    pub fn matches(&self, record: &Map<String, Value>) -> bool {
        self.filters.iter().all(|f| {
            let mut vals = Vec::new();
            collect(record, &f.path, &mut vals);
            f.eval(&vals)
        })
    }

    /// Compares by `order_by` (default `id`), `dir`; ties by ascending id.
    pub fn order(&self, a: &Map<String, Value>, b: &Map<String, Value>) -> Ordering {
        let key = self.order_by.as_deref().unwrap_or("id");
        let primary = cmp_values(field(a, key), field(b, key));
        let primary = if self.desc {
            primary.reverse()
        } else {
            primary
        };
        primary.then_with(|| cmp_values(a.get("id"), b.get("id")))
    }

    /// Applies `fields=[...]`; the whole record when absent.
    pub fn project(&self, record: &Map<String, Value>) -> Map<String, Value> {
        match &self.fields {
            Some(spec) => project(record, spec),
            None => record.clone(),
        }
    }

    /// [`Query::project`] without copying a record `fields=` leaves whole.
    pub fn project_shared(&self, record: &Arc<Map<String, Value>>) -> Arc<Map<String, Value>> {
        match &self.fields {
            Some(spec) => Arc::new(project(record, spec)),
            None => record.clone(),
        }
    }
}

/// Looks a key up in the record's spelling or the other one.
fn field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key)
        .or_else(|| obj.get(&key.replace('_', "-")))
        .or_else(|| obj.get(&key.replace('-', "_")))
}

/// All values at `path`, descending through arrays (a filter on
/// `order_lines[status]` is about any line, like a SQL join).
fn collect<'a>(v: &'a Map<String, Value>, path: &[String], out: &mut Vec<&'a Value>) {
    let Some((head, rest)) = path.split_first() else {
        return;
    };
    let Some(next) = field(v, head) else { return };
    descend(next, rest, out);
}

fn descend<'a>(v: &'a Value, rest: &[String], out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) if !rest.is_empty() => items.iter().for_each(|i| descend(i, rest, out)),
        Value::Object(o) if !rest.is_empty() => collect(o, rest, out),
        _ if rest.is_empty() => out.push(v),
        _ => {}
    }
}

fn is_blank(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

impl Filter {
    fn eval(&self, vals: &[&Value]) -> bool {
        let q = &self.values[0];
        match self.op {
            Op::Blank => vals.iter().all(|v| is_blank(v)) == (q.raw == "true"),
            Op::In => vals.iter().any(|v| {
                self.values
                    .iter()
                    .any(|q| cmp(v, q) == Some(Ordering::Equal))
            }),
            Op::NotIn => vals.iter().any(|v| {
                !v.is_null()
                    && self
                        .values
                        .iter()
                        .all(|q| cmp(v, q).is_some_and(|o| o != Ordering::Equal))
            }),
            Op::Contains | Op::StartsWith | Op::EndsWith => vals.iter().any(|v| {
                let s = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => return false,
                };
                match self.op {
                    Op::Contains => s.contains(&q.raw),
                    Op::StartsWith => s.starts_with(&q.raw),
                    _ => s.ends_with(&q.raw),
                }
            }),
            op => vals.iter().any(|v| {
                cmp(v, q).is_some_and(|o| match op {
                    Op::Eq => o == Ordering::Equal,
                    Op::NotEq => o != Ordering::Equal,
                    Op::Gt => o == Ordering::Greater,
                    Op::Lt => o == Ordering::Less,
                    Op::GtOrEq => o != Ordering::Less,
                    Op::LtOrEq => o != Ordering::Greater,
                    _ => unreachable!("handled above"),
                })
            }),
        }
    }
}

/// Record value vs query value; `None` when they cannot be compared (null, objects).
fn cmp(v: &Value, q: &QVal) -> Option<Ordering> {
    match v {
        Value::String(s) => {
            if let (Some(t), Some(qt)) = (q.time, parse_timestamp(s)) {
                return Some(qt.cmp(&t));
            }
            if let (Ok(n), Some(qn)) = (s.trim().parse::<f64>(), q.num) {
                return n.partial_cmp(&qn);
            }
            Some(s.as_str().cmp(q.raw.as_str()))
        }
        Value::Number(n) => match q.num {
            Some(qn) => n.as_f64()?.partial_cmp(&qn),
            None => Some(n.to_string().cmp(&q.raw)),
        },
        Value::Bool(b) => match q.raw.as_str() {
            "true" | "1" => Some(b.cmp(&true)),
            "false" | "0" => Some(b.cmp(&false)),
            _ => None,
        },
        _ => None,
    }
}

/// Orders two record values for `order_by`: nulls first, then timestamps
/// as instants, numbers numerically, strings lexically.
fn cmp_values(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    let rank = |v: Option<&Value>| match v {
        None | Some(Value::Null) => 0,
        _ => 1,
    };
    match (a, b) {
        (Some(Value::String(x)), Some(Value::String(y))) => {
            if let (Some(tx), Some(ty)) = (parse_timestamp(x), parse_timestamp(y)) {
                return tx.cmp(&ty);
            }
            if let (Ok(nx), Ok(ny)) = (x.parse::<f64>(), y.parse::<f64>()) {
                return nx.total_cmp(&ny);
            }
            x.cmp(y)
        }
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .unwrap_or(0.0)
            .total_cmp(&y.as_f64().unwrap_or(0.0)),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (x, y) if rank(x) != rank(y) => rank(x).cmp(&rank(y)),
        (x, y) => x.map(Value::to_string).cmp(&y.map(Value::to_string)),
    }
}

/// `fields=["id","po-number",{"supplier":["id","name"]},{"custom_fields":{}}]`:
/// names in either spelling; an empty object/array means "all of it".
fn project(record: &Map<String, Value>, spec: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    let Value::Array(items) = spec else {
        return record.clone();
    };
    let mut copy = |name: &str, sub: Option<&Value>| {
        let key = [
            name.to_string(),
            name.replace('_', "-"),
            name.replace('-', "_"),
        ]
        .into_iter()
        .find(|k| record.contains_key(k));
        let Some(key) = key else { return };
        let v = &record[&key];
        let v = match (sub, v) {
            (Some(sub @ Value::Array(a)), Value::Object(o)) if !a.is_empty() => {
                Value::Object(project(o, sub))
            }
            (Some(sub @ Value::Array(a)), Value::Array(list)) if !a.is_empty() => Value::Array(
                list.iter()
                    .map(|i| match i {
                        Value::Object(o) => Value::Object(project(o, sub)),
                        other => other.clone(),
                    })
                    .collect(),
            ),
            _ => v.clone(),
        };
        out.insert(key, v);
    };
    for item in items {
        match item {
            Value::String(name) => copy(name, None),
            Value::Object(o) => o.iter().for_each(|(name, sub)| copy(name, Some(sub))),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn parses_brackets_ops_and_paging() {
        let q = Query::parse("updated_at%5Bgt_or_eq%5D=2026-01-01T00%3A00%3A00%2B05%3A30&supplier[name]=Acme&limit=500&offset=7&dir=desc&order_by=created_at&fields=%5B%22id%22%5D").unwrap();
        assert_eq!(q.limit, 50);
        assert_eq!(q.offset, 7);
        assert!(q.desc);
        assert_eq!(q.filters.len(), 2);
        assert_eq!(q.filters[0].op, Op::GtOrEq);
        assert_eq!(q.filters[1].path, vec!["supplier", "name"]);
        assert_eq!(q.filters[1].op, Op::Eq);
        assert_eq!(Query::parse("limit=0").unwrap().limit, 50);
        assert_eq!(Query::parse("limit=7").unwrap().limit, 7);
    }

    #[test]
    fn unencoded_plus_in_a_datetime_is_an_error() {
        let err = Query::parse("updated_at[gt]=2026-01-01T00:00:00+05:30").unwrap_err();
        assert!(err.contains("%2B"), "{err}");
        assert!(
            Query::parse("updated_at[gt]=2026-01-01").is_ok(),
            "bare date is midnight UTC"
        );
    }

    #[test]
    fn nested_paths_and_arrays_match_any_element() {
        let r = rec(
            json!({"id": 1, "order-lines": [{"status": "open"}, {"status": "closed"}],
                            "supplier": {"name": "Acme"}, "po-email": null}),
        );
        let m = |qs: &str| Query::parse(qs).unwrap().matches(&r);
        assert!(m("order_lines[status]=closed"));
        assert!(!m("order_lines[status]=draft"));
        assert!(m("supplier[name][starts_with]=Ac"));
        assert!(m("po_email[blank]=true"));
        assert!(m("missing_attr[blank]=true"));
        assert!(!m("po_email[not_eq]=x"), "null satisfies no comparison");
    }

    #[test]
    fn projection_keeps_record_spelling() {
        let r = rec(
            json!({"id": 1, "po-number": "P1", "supplier": {"id": 2, "name": "A"},
                            "custom-fields": {"a": 1}, "total": "1.00"}),
        );
        let q =
            Query::parse(r#"fields=["id","po_number",{"supplier":["id"]},{"custom_fields":{}}]"#)
                .unwrap();
        assert_eq!(
            Value::Object(q.project(&r)),
            json!({"id": 1, "po-number": "P1", "supplier": {"id": 2}, "custom-fields": {"a": 1}})
        );
    }
}
