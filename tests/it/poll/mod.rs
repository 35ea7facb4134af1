//! The polling algorithm: windows, paging and detection against every
//! version the simulator showed (`feed`); sliced backfill (`backfill`).

mod backfill;
mod feed;
