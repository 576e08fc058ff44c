//! The fail-open cache against real redis-server processes that each test
//! starts, kills, pauses or fills. Every wait is bounded.

mod backends;
mod batch;
mod client;
mod common;
mod edges;
mod faults;
mod healthy;
mod load;
mod partial;
mod pipe;
mod recovery;
mod tls;
