//! The object catalogue lives in [`coupa_model::objects`], shared with the
//! simulator; re-exported here so `crate::coupa::objects::*` keeps working.

pub use coupa_model::objects::*;
