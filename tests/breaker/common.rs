use std::time::Duration;

use fusebox::breaker::{ConfigBuilder, Error, Outcome};
use tower::BoxError;

/// Lets timer tasks woken by `tokio::time::advance` run.
pub(crate) async fn settle() {
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
}

/// Advances paused time and lets the breaker's timers run.
pub(crate) async fn advance(d: Duration) {
    tokio::time::advance(d).await;
    settle().await;
}

/// A configuration without jitter, so open periods are exact.
pub(crate) fn exact() -> ConfigBuilder {
    fusebox::breaker::Config::builder().open_jitter(0.0)
}

pub(crate) fn is_open<E>(err: &Error<E>) -> bool {
    err.is_open()
}

/// Errors named "ignored" say nothing about health.
pub(crate) fn classify(r: Result<&&'static str, &&'static str>) -> Outcome {
    match r {
        Ok(_) => Outcome::Success,
        Err(&"ignored") => Outcome::Ignored,
        Err(_) => Outcome::Failure,
    }
}

pub(crate) type ClassifyFn = fn(Result<&&'static str, &&'static str>) -> Outcome;

/// [`classify`] for services whose errors are already boxed (mocks).
pub(crate) fn classify_boxed(r: Result<&&'static str, &BoxError>) -> Outcome {
    match r {
        Ok(_) => Outcome::Success,
        Err(e) if e.to_string() == "ignored" => Outcome::Ignored,
        Err(_) => Outcome::Failure,
    }
}

pub(crate) type BoxedClassifyFn = fn(Result<&&'static str, &BoxError>) -> Outcome;
