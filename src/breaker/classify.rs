//! Deciding which outcomes are failures.

/// What a call's result says about the health of the service behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The service worked.
    Success,
    /// The service is unhealthy: counts towards tripping.
    Failure,
    /// Says nothing about health (a caller's bad request, a miss): not
    /// recorded at all. An ignored probe frees its slot without deciding.
    Ignored,
}

/// Classifies a call's result into an [`Outcome`].
///
/// The classifier is cloned into every response future: keep it cheap to
/// clone (a zero-sized type, a `fn`, or a closure capturing nothing), which
/// costs nothing per call.
///
/// Any `Fn(Result<&T, &E>) -> Outcome` is a classifier:
///
/// ```
/// use fusebox::breaker::{Classify, Outcome};
///
/// // HTTP-like: a 5xx is a failure, a 4xx is the caller's problem.
/// let by_status = |r: Result<&u16, &std::io::Error>| match r {
///     Ok(s) if *s >= 500 => Outcome::Failure,
///     Ok(s) if *s >= 400 => Outcome::Ignored,
///     Ok(_) => Outcome::Success,
///     Err(_) => Outcome::Failure,
/// };
/// assert_eq!(by_status.classify(Ok(&503)), Outcome::Failure);
/// assert_eq!(by_status.classify(Ok(&404)), Outcome::Ignored);
/// ```
pub trait Classify<T, E> {
    /// Classifies one result: a response (`Ok`) or an error (`Err`).
    fn classify(&self, result: Result<&T, &E>) -> Outcome;
}

/// The default classifier: every response is a success, every error a
/// failure.
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultClassifier;

impl<T, E> Classify<T, E> for DefaultClassifier {
    #[inline]
    fn classify(&self, result: Result<&T, &E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }
}

impl<T, E, F> Classify<T, E> for F
where
    F: Fn(Result<&T, &E>) -> Outcome,
{
    #[inline]
    fn classify(&self, result: Result<&T, &E>) -> Outcome {
        self(result)
    }
}
