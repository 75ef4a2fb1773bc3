//! The HTTP API end to end, over real HTTP, against the `keyward serve` binary.

mod allowed_ips;
mod bad_input;
mod cli;
mod client;
mod contract;
mod key_prefix;
mod leaks;
mod lifecycle;
mod people;
mod permissions;
mod race;
mod schedule;
mod support;
mod usage;
