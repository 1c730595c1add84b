//! Billing's integration tests: one binary, one module per story.

mod client;
mod events;
mod fuzz;
mod properties;
mod rating;
mod signature;
