//! The Coupa layer: the client against scripted servers (`client`) and
//! actions through the library against the simulator (`actions`).

mod actions;
mod client;
