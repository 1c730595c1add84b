//! Stories over the public HTTP API, each against a fresh app on port 0 with its own data dir.

mod analytics;
mod bad_input;
mod billing;
mod chat;
mod churn;
mod dashboards;
mod embeddings;
mod erasure;
mod export;
mod gateway;
mod helpers;
mod idempotency;
mod isolation;
mod lifecycle;
mod limits;
mod models;
mod month;
mod multipart;
mod observability;
mod plan;
mod retention;
mod retrieval;
mod spend;
mod story;
mod stripe;
mod webhooks;
