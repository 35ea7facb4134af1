//! What an action addresses ([`Target`]) and what it does to it (`Op`):
//! looking the object up in the catalogue, refusing before any request
//! what Coupa does not allow, and the collection path to call.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::coupa::error::CoupaError;
use crate::coupa::objects::{self, ObjectSpec};

/// Which object an action addresses: a catalogue name, plus the parent
/// record id for objects Coupa nests under a parent (supplier sites and
/// remit-to addresses live under `/api/suppliers/:id/...`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub object: String,
    #[serde(default)]
    pub parent: Option<u64>,
}

impl Target {
    /// A top-level object, e.g. `purchase_orders`.
    pub fn top(object: &str) -> Target {
        Target {
            object: object.into(),
            parent: None,
        }
    }

    /// A nested object under its parent record, e.g. `supplier_sites` of supplier 42.
    pub fn nested(object: &str, parent: u64) -> Target {
        Target {
            object: object.into(),
            parent: Some(parent),
        }
    }
}

impl From<&str> for Target {
    fn from(object: &str) -> Target {
        Target::top(object)
    }
}

impl From<&Target> for Target {
    fn from(t: &Target) -> Target {
        t.clone()
    }
}

/// What an action does to an object, for capability checks and messages.
#[derive(Debug, Clone, Copy)]
pub(super) enum Op<'a> {
    Get,
    List,
    Create,
    Update,
    Action(&'a str),
}

impl fmt::Display for Op<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Get => f.write_str("get"),
            Op::List => f.write_str("search"),
            Op::Create => f.write_str("create"),
            Op::Update => f.write_str("update"),
            Op::Action(a) => write!(f, "action `{a}`"),
        }
    }
}

/// Looks the target up in the catalogue, refuses what Coupa does not
/// allow on it, and returns its collection path.
pub(super) fn resolve(
    target: &Target,
    op: Op<'_>,
) -> Result<(&'static ObjectSpec, String), CoupaError> {
    let spec = objects::lookup(&target.object).ok_or_else(|| {
        CoupaError::Invalid(format!(
            "unknown object `{}`; known: {}",
            target.object,
            objects::names().join(", ")
        ))
    })?;
    let allowed = match op {
        Op::Get => spec.caps.get,
        Op::List => spec.caps.list,
        Op::Create => spec.caps.create,
        Op::Update => spec.caps.update,
        Op::Action(a) => spec.actions.contains(&a),
    };
    if !allowed {
        return Err(CoupaError::Refused {
            object: spec.name.into(),
            operation: op.to_string(),
            reason: refusal(spec, op),
        });
    }
    let path = match (spec.parent, target.parent) {
        (Some(_), Some(pid)) => spec.list_path(Some(&pid.to_string())),
        (Some(p), None) => {
            return Err(CoupaError::Invalid(format!(
                "{} live under {}: give the parent {} id",
                spec.name, p.object, p.object
            )))
        }
        (None, Some(_)) => {
            return Err(CoupaError::Invalid(format!(
                "{} is not nested under a parent; drop the parent id",
                spec.name
            )))
        }
        (None, None) => spec.path.to_string(),
    };
    Ok((spec, path))
}

/// Why the catalogue refuses `op` on `spec`, with the way round it where
/// coupa-api.md §5 gives one.
fn refusal(spec: &ObjectSpec, op: Op<'_>) -> String {
    match (spec.name, op) {
        ("purchase_order_lines", Op::Create | Op::Update) => {
            "PO lines are added and changed through their purchase order: update purchase_orders with `order-lines` in the body".into()
        }
        ("inventory_transactions", Op::Create | Op::Update) => {
            "Coupa's receipts API is read-only here (writes moved to /api/receiving_transactions; use raw)".into()
        }
        (_, Op::Action(a)) => {
            if spec.actions.is_empty() {
                format!("Coupa offers no `{a}` on {}; it has no actions", spec.name)
            } else {
                format!(
                    "Coupa offers no `{a}` on {}; its actions are: {}",
                    spec.name,
                    spec.actions.join(", ")
                )
            }
        }
        _ => format!("Coupa's API does not offer it on {}", spec.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_follow_the_catalogue() {
        let e = resolve(&"purchase_order_lines".into(), Op::Create).unwrap_err();
        assert!(
            e.to_string().contains("through their purchase order"),
            "{e}"
        );
        assert_eq!(e.kind(), "refused");
        let e = resolve(&"purchase_orders".into(), Op::Action("resolve")).unwrap_err();
        assert!(e.to_string().contains("close, cancel"), "{e}");
        assert!(resolve(&"purchase_orders".into(), Op::Action("close")).is_ok());
        let e = resolve(&"supplier_sites".into(), Op::List).unwrap_err();
        assert_eq!(e.kind(), "invalid");
        let (_, path) = resolve(&Target::nested("supplier_sites", 4), Op::List).unwrap();
        assert_eq!(path, "/api/suppliers/4/supplier_sites");
        assert_eq!(
            resolve(&"nope".into(), Op::Get).unwrap_err().kind(),
            "invalid"
        );
    }
}
