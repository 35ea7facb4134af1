//! The sinks end to end: `webhook` (a receiver on 127.0.0.1) and `kafka`
//! (librdkafka's mock cluster, and Tansu for the daemon tests).

mod kafka;
mod webhook;
