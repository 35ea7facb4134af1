//! Suppliers: their remit-to addresses and sites, nested under
//! `/api/suppliers/:id/...`.

use futures_util::stream::TryStreamExt;

use super::{Actions, Target};
use crate::coupa::error::CoupaError;
use crate::coupa::record::Record;

/// Most records [`Actions::remit_to_addresses`] and
/// [`Actions::supplier_sites`] collect: a supplier has a handful; this
/// only keeps a runaway list from growing memory without bound.
pub const NESTED_LIMIT: usize = 1000;

impl Actions {
    /// A supplier's remit-to addresses (`/api/suppliers/:id/addresses`),
    /// at most [`NESTED_LIMIT`].
    pub async fn remit_to_addresses(&self, supplier_id: u64) -> Result<Vec<Record>, CoupaError> {
        self.search(
            Target::nested("remit_to_addresses", supplier_id),
            &[],
            NESTED_LIMIT,
        )?
        .try_collect()
        .await
    }

    /// A supplier's sites (`/api/suppliers/:id/supplier_sites`), at most
    /// [`NESTED_LIMIT`].
    pub async fn supplier_sites(&self, supplier_id: u64) -> Result<Vec<Record>, CoupaError> {
        self.search(
            Target::nested("supplier_sites", supplier_id),
            &[],
            NESTED_LIMIT,
        )?
        .try_collect()
        .await
    }
}
