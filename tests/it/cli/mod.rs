//! The real binaries as an operator runs them: `commands` (`demo`, `run`,
//! `objects`, `state`, bad configs) and `actions` (actions as commands).

mod actions;
mod commands;
