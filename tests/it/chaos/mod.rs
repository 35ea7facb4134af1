//! Failure on purpose, checked against the simulator's ground truth: the
//! daemon killed with SIGKILL (`crash`), Coupa faults and sink outages
//! (`reliability`), damaged state and hostile records (`hostile`), and the
//! poller under injected faults (`faults`).

mod crash;
mod faults;
mod hostile;
mod reliability;
