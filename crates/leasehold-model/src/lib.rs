//! A model of leasehold's lock protocol, explored exhaustively with
//! [stateright](https://docs.rs/stateright).
//!
//! - [`store`] and [`scripts`]: the keys of a lock and the twins of its Lua scripts, run
//!   atomically as Redis runs them (`tests/twins.rs` holds them to the real scripts on a
//!   real redis-server).
//! - [`model`]: Redis servers applying those scripts, clients that follow leasehold's
//!   client rules, connections that lose and delay replies and are re-opened, server TTLs
//!   and client clocks as discrete time with bounded drift, pauses and crashes; the
//!   properties of PROTOCOL.md checked on every reachable state.
//! - [`symmetry`]: the renumbering of clients that lets the checker keep one state of
//!   each set of states that differ only in the clients' numbers.
//! - [`bugs`]: known mistakes that can be seeded into the model, each of which the checker
//!   must find.
#![forbid(unsafe_code)]

pub mod bugs;
pub mod check;
pub mod model;
pub mod scripts;
pub mod store;
pub mod symmetry;
