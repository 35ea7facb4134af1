//! Purchase orders: close and cancel.

use super::Actions;
use crate::coupa::error::CoupaError;
use crate::coupa::record::Record;

impl Actions {
    /// `PUT /api/purchase_orders/:id/close`. Coupa applies its UI
    /// validations: closing a cancelled or closed PO is a 400.
    pub async fn close_purchase_order(&self, id: u64) -> Result<Record, CoupaError> {
        self.perform("purchase_orders", id, "close", None).await
    }

    /// `PUT /api/purchase_orders/:id/cancel`.
    pub async fn cancel_purchase_order(&self, id: u64) -> Result<Record, CoupaError> {
        self.perform("purchase_orders", id, "cancel", None).await
    }
}
