//! Circuit breaker tests through the tower `Service` interface.

mod common;
mod concurrency;
mod contract;
mod extremes;
mod model;
mod mutants;
mod service;
