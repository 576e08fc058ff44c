//! Model checks (loom) of the breaker's lock-free front and its circuit,
//! over every interleaving of two threads: a call admitted in one epoch
//! finishing after the circuit moved on, and two callers racing for one
//! half-open probe slot.
//!
//! `scripts/loom.sh` runs them, and again with each seeded bug planted
//! (`breaker_any_epoch`, `breaker_probe_limit`), which they must catch.

use std::sync::Arc;
use std::time::Duration;

use loom::future::block_on;
use loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use loom::thread;
use tower::{Service, ServiceExt};

use super::*;

/// A downstream that answers `Ok` for `true`, and checks that no more
/// than one call is in it at a time.
fn downstream(
    inside: Arc<AtomicUsize>,
) -> impl Service<
    bool,
    Response = (),
    Error = &'static str,
    Future = impl std::future::Future<Output = Result<(), &'static str>> + Send,
> + Clone {
    tower::service_fn(move |ok: bool| {
        let inside = inside.clone();
        async move {
            let n = inside.fetch_add(1, SeqCst) + 1;
            // A point where the other thread may come in.
            thread::yield_now();
            inside.fetch_sub(1, SeqCst);
            assert!(
                n <= 1,
                "two calls in a half-open circuit with one probe slot"
            );
            if ok {
                Ok(())
            } else {
                Err("down")
            }
        }
    })
}

#[test]
fn loom_an_outcome_from_an_earlier_epoch_is_never_recorded() {
    loom::model(|| {
        let config = Config::builder()
            .consecutive_failures(1)
            .open_for(Duration::from_secs(3600))
            .build()
            .unwrap();
        let breaker = Breaker::new(config);
        let mut svc =
            CircuitBreaker::new(downstream(Arc::new(AtomicUsize::new(0))), breaker.clone());
        // Admitted while closed, in the first epoch.
        block_on(ServiceExt::<bool>::ready(&mut svc)).unwrap();
        let call = svc.call(false);
        // Meanwhile an operator opens the circuit and closes it again.
        let operator = {
            let breaker = breaker.clone();
            thread::spawn(move || {
                breaker.force_open();
                breaker.close();
            })
        };
        let _ = block_on(call);
        operator.join().unwrap();
        // The failure tripped the first epoch's circuit (and the operator
        // closed it), or came too late to count: closed either way.
        assert_eq!(breaker.state(), State::Closed);
    });
}

#[test]
fn loom_a_half_open_circuit_admits_no_more_probes_than_its_slots() {
    loom::model(|| {
        let config = Config::builder()
            .consecutive_failures(1)
            .open_for(Duration::from_millis(1))
            .half_open_probes(1)
            .build()
            .unwrap();
        let breaker = Breaker::new(config);
        let inside = Arc::new(AtomicUsize::new(0));
        let svc = CircuitBreaker::new(downstream(inside), breaker.clone());
        // One failure trips it; 1 ms later it lets a probe through.
        let mut first = svc.clone();
        let _ = block_on(async { first.ready().await?.call(false).await });
        assert_ne!(breaker.state(), State::Closed);
        std::thread::sleep(Duration::from_millis(2));
        let probe = |mut svc: CircuitBreaker<_>| {
            block_on(async move { svc.ready().await?.call(true).await }).is_ok()
        };
        let other = {
            let svc = svc.clone();
            thread::spawn(move || probe(svc))
        };
        let mine = probe(svc);
        let theirs = other.join().unwrap();
        // The slot admits one probe; it closes the circuit; the other was
        // rejected, or admitted once it had closed.
        assert!(mine || theirs);
        assert_eq!(breaker.state(), State::Closed);
    });
}
