//! The object catalogue: the one list of Coupa objects this daemon knows,
//! with each one's resource path, event name, OAuth scope and what Coupa
//! allows on it. Pollers, actions, the simulator and the CLI all read it;
//! nothing else may hard-code an object name or path.

use serde::Serialize;

/// What Coupa allows on an object through the REST API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// `GET /api/x` (the trigger needs this).
    pub list: bool,
    /// `GET /api/x/:id`.
    pub get: bool,
    /// `POST /api/x`.
    pub create: bool,
    /// `PUT /api/x/:id`.
    pub update: bool,
}

const ALL: Capabilities = Capabilities {
    list: true,
    get: true,
    create: true,
    update: true,
};

/// A parent under which Coupa nests an object (supplier sites and remit-to
/// addresses live under `/api/suppliers/:supplier_id/...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Parent {
    /// Catalogue name of the parent object.
    pub object: &'static str,
    /// Placeholder in [`ObjectSpec::path`] that the parent id replaces.
    pub placeholder: &'static str,
}

/// One object of the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ObjectSpec {
    /// Config and CLI name (plural, snake case), e.g. `purchase_orders`.
    pub name: &'static str,
    /// Singular name used in event types: `coupa.<singular>.updated`.
    pub singular: &'static str,
    /// Resource path; nested objects carry their parent's placeholder.
    pub path: &'static str,
    /// OAuth scope prefix; `.read` / `.write` are appended.
    pub scope: &'static str,
    /// Verbs Coupa allows.
    pub caps: Capabilities,
    /// Object-specific `PUT /api/x/:id/<action>` calls.
    pub actions: &'static [&'static str],
    /// Set for objects Coupa only lists under a parent record.
    pub parent: Option<Parent>,
}

impl ObjectSpec {
    /// The list path for a top-level object, or for a nested one under
    /// `parent_id`.
    pub fn list_path(&self, parent_id: Option<&str>) -> String {
        match (self.parent, parent_id) {
            (Some(p), Some(id)) => self.path.replace(p.placeholder, id),
            _ => self.path.to_string(),
        }
    }

    /// The read scope Coupa requires for this object.
    pub fn read_scope(&self) -> String {
        format!("{}.read", self.scope)
    }

    /// The write scope Coupa requires for this object.
    pub fn write_scope(&self) -> String {
        format!("{}.write", self.scope)
    }
}

const SUPPLIER_PARENT: Parent = Parent {
    object: "suppliers",
    placeholder: "{supplier_id}",
};

macro_rules! obj {
    ($name:literal, $singular:literal, $path:literal, $scope:literal, $caps:expr, $actions:expr) => {
        obj!($name, $singular, $path, $scope, $caps, $actions, None)
    };
    ($name:literal, $singular:literal, $path:literal, $scope:literal, $caps:expr, $actions:expr, $parent:expr) => {
        ObjectSpec {
            name: $name,
            singular: $singular,
            path: $path,
            scope: $scope,
            caps: $caps,
            actions: $actions,
            parent: $parent,
        }
    };
}

/// Every object the daemon supports, sorted by name.
pub static CATALOGUE: &[ObjectSpec] = &[
    obj!(
        "accounts",
        "account",
        "/api/accounts",
        "core.accounting",
        ALL,
        &[]
    ),
    obj!(
        "addresses",
        "address",
        "/api/addresses",
        "core.common",
        ALL,
        &[]
    ),
    obj!(
        "contracts",
        "contract",
        "/api/contracts",
        "core.contract",
        ALL,
        &["submit_for_approval", "complete", "update_published"]
    ),
    obj!(
        "departments",
        "department",
        "/api/departments",
        "core.common",
        ALL,
        &[]
    ),
    obj!(
        "exchange_rates",
        "exchange_rate",
        "/api/exchange_rates",
        "core.common",
        ALL,
        &[]
    ),
    obj!(
        "expense_lines",
        "expense_line",
        "/api/expense_lines",
        "core.expense",
        ALL,
        &["calculate_mileage", "calculate_per_diem"]
    ),
    obj!(
        "expense_reports",
        "expense_report",
        "/api/expense_reports",
        "core.expense",
        ALL,
        &["submit", "add_approver", "remove_approval"]
    ),
    obj!(
        "integration_errors",
        "integration_error",
        "/api/integration_errors",
        "core.integration",
        ALL,
        &["resolve", "unresolve"]
    ),
    obj!(
        "integration_history_records",
        "integration_history_record",
        "/api/integration_history_records",
        "core.integration",
        ALL,
        &["resolve"]
    ),
    obj!(
        "integration_runs",
        "integration_run",
        "/api/integration_runs",
        "core.integration",
        ALL,
        &["pending", "run", "success", "fail", "pause"]
    ),
    obj!(
        "integrations",
        "integration",
        "/api/integrations",
        "core.integration",
        ALL,
        &[]
    ),
    obj!(
        "inventory_transactions",
        "inventory_transaction",
        "/api/inventory_transactions",
        "core.inventory.receiving",
        Capabilities {
            list: true,
            get: true,
            create: false,
            update: false
        },
        &["void"]
    ),
    obj!(
        "invoices",
        "invoice",
        "/api/invoices",
        "core.invoice",
        ALL,
        &[
            "submit",
            "void",
            "abandon",
            "dispute",
            "withdraw_dispute",
            "bypass_approvals",
            "restart_approvals"
        ]
    ),
    obj!("items", "item", "/api/items", "core.item", ALL, &[]),
    obj!(
        "lookup_values",
        "lookup_value",
        "/api/lookup_values",
        "core.common",
        ALL,
        &[]
    ),
    obj!(
        "purchase_order_lines",
        "purchase_order_line",
        "/api/purchase_order_lines",
        "core.purchase_order",
        Capabilities {
            list: true,
            get: true,
            create: false,
            update: false
        },
        &[
            "soft_close_for_receiving",
            "soft_close_for_invoicing",
            "reopen_for_receiving",
            "reopen_for_invoicing"
        ]
    ),
    obj!(
        "purchase_orders",
        "purchase_order",
        "/api/purchase_orders",
        "core.purchase_order",
        ALL,
        &[
            "close",
            "cancel",
            "reopen",
            "issue",
            "issue_without_send",
            "release_from_buyer_hold"
        ]
    ),
    obj!(
        "remit_to_addresses",
        "remit_to_address",
        "/api/suppliers/{supplier_id}/addresses",
        "core.supplier",
        ALL,
        &[],
        Some(SUPPLIER_PARENT)
    ),
    obj!(
        "supplier_information",
        "supplier_information",
        "/api/supplier_information",
        "core.supplier",
        ALL,
        &[]
    ),
    obj!(
        "supplier_items",
        "supplier_item",
        "/api/supplier_items",
        "core.supplier",
        ALL,
        &[]
    ),
    obj!(
        "supplier_sites",
        "supplier_site",
        "/api/suppliers/{supplier_id}/supplier_sites",
        "core.supplier_sites",
        ALL,
        &[],
        Some(SUPPLIER_PARENT)
    ),
    obj!(
        "suppliers",
        "supplier",
        "/api/suppliers",
        "core.supplier",
        ALL,
        &[]
    ),
    obj!("users", "user", "/api/users", "core.user", ALL, &[]),
];

/// Looks an object up by its catalogue name.
pub fn lookup(name: &str) -> Option<&'static ObjectSpec> {
    CATALOGUE.iter().find(|o| o.name == name)
}

/// All catalogue names, for error messages and `objects`.
pub fn names() -> Vec<&'static str> {
    CATALOGUE.iter().map(|o| o.name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_has_23_unique_sorted_objects() {
        assert_eq!(CATALOGUE.len(), 23);
        let names = names();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted, "catalogue must be sorted and unique");
    }

    #[test]
    fn nested_paths_resolve_under_their_parent() {
        let sites = lookup("supplier_sites").unwrap();
        assert_eq!(
            sites.list_path(Some("42")),
            "/api/suppliers/42/supplier_sites"
        );
        let remit = lookup("remit_to_addresses").unwrap();
        assert_eq!(remit.list_path(Some("7")), "/api/suppliers/7/addresses");
        assert!(lookup("purchase_orders").unwrap().parent.is_none());
    }

    #[test]
    fn parents_are_catalogue_objects() {
        for o in CATALOGUE {
            if let Some(p) = o.parent {
                assert!(lookup(p.object).is_some(), "{}", o.name);
                assert!(o.path.contains(p.placeholder), "{}", o.name);
            }
        }
    }
}
