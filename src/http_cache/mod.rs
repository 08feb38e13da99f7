//! Standard HTTP caching (RFC 9111) for routes with `freshness = "origin"`
//! (docs/contract.md section 3b): the decisions, as pure functions, that the request flow
//! in the proxy asks at a few named points.
//!
//! - [`date`]: HTTP-date parsing (all three formats) and formatting.
//! - [`freshness`]: freshness lifetime, age (RFC 9111 section 4.2.3), and
//!   whether a request may reuse a stored answer as it is.
//! - [`store`]: whether an answer may be stored, and for how long.
//! - [`vary`]: `Vary` names, stored variants and matching.
//! - [`conditional`]: the client's preconditions, revalidation validators
//!   and the `304` header update.
//! - [`invalidate`]: which URIs an unsafe request invalidates.
//! - [`range`]: byte ranges served from a stored complete answer.
//!
//! Cache-Control itself is parsed in [`crate::cache_control`].

pub mod conditional;
pub mod date;
pub mod freshness;
pub mod invalidate;
pub mod range;
pub mod store;
pub mod vary;
