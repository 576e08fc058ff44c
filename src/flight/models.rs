//! Model checks (loom) of single flight: a leader and a follower, and a
//! leader cancelled mid-load while a follower waits on it.
//!
//! `scripts/loom.sh` runs them, and again with the seeded bug
//! `flight_no_wake_on_cancel` planted, which they must catch (as a
//! deadlock).

use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use loom::thread;

use super::*;

type Answer = Result<Coalesced<(), ()>, ()>;

/// A caller of `coalesce` whose load counts itself and answers "v".
async fn call(flights: &Flights, loads: &AtomicUsize) -> Answer {
    let key = Bytes::from_static(b"k");
    let load = |()| async {
        loads.fetch_add(1, SeqCst);
        Ok(((), Some((Bytes::from_static(b"v"), ()))))
    };
    flights.coalesce(&key, (), load, |_, ()| async {}).await
}

#[test]
fn loom_a_leader_and_a_follower_share_one_load_or_lead_in_turn() {
    loom::model(|| {
        let flights = Arc::new(Flights::default());
        let loads = Arc::new(AtomicUsize::new(0));
        let other = {
            let (flights, loads) = (flights.clone(), loads.clone());
            thread::spawn(move || loom::future::block_on(call(&flights, &loads)))
        };
        let mine = loom::future::block_on(call(&flights, &loads));
        let theirs = other.join().unwrap();
        let shared = [&mine, &theirs]
            .iter()
            .filter(|a| matches!(a, Ok(Coalesced::Shared(v, ())) if v == "v"))
            .count();
        let led = [&mine, &theirs]
            .iter()
            .filter(|a| matches!(a, Ok(Coalesced::Led(()))))
            .count();
        assert_eq!(led + shared, 2, "{mine:?} {theirs:?}");
        assert_eq!(loads.load(SeqCst), led, "one load per leader");
        assert!(led >= 1);
        assert_eq!(flights.size().keys, 0, "no flight left behind");
    });
}

#[test]
fn loom_a_cancelled_leader_hands_on_to_its_follower() {
    loom::model(|| {
        let flights = Arc::new(Flights::default());
        let loads = Arc::new(AtomicUsize::new(0));
        let cancelled = {
            let flights = flights.clone();
            thread::spawn(move || {
                let key = Bytes::from_static(b"k");
                // A load that never ends: polled once, then dropped.
                let load = |()| std::future::pending::<Result<((), Option<(Bytes, ())>), ()>>();
                let mut call = pin!(flights.coalesce(&key, (), load, |_, ()| async {}));
                // Pending as the leader, or as a follower of a load that
                // has not landed; a follower of one that has, shares it.
                let first = call.as_mut().poll(&mut Context::from_waker(Waker::noop()));
                assert!(
                    matches!(
                        first,
                        Poll::Pending | Poll::Ready(Ok(Coalesced::Shared(..)))
                    ),
                    "{first:?}"
                );
            })
        };
        let answer = loom::future::block_on(call(&flights, &loads));
        cancelled.join().unwrap();
        // It never follows a load that cannot end: it leads, at once or
        // once the cancelled leader is gone.
        assert!(matches!(answer, Ok(Coalesced::Led(()))), "{answer:?}");
        assert_eq!(loads.load(SeqCst), 1);
        assert_eq!(flights.size().keys, 0, "no flight left behind");
    });
}
