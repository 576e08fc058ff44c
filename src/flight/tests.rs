//! Single flight on a real runtime: followers share, a cancelled leader
//! hands on, `try_lead` stands aside, and no flight is left behind.
//! (The loom models in `models.rs` check the same over every interleaving.)

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;

use super::*;

type Answer = Result<Coalesced<(), ()>, ()>;

async fn call(flights: &Flights, gate: &Notify, loads: &AtomicUsize) -> Answer {
    let key = Bytes::from_static(b"k");
    let load = |()| async {
        loads.fetch_add(1, SeqCst);
        gate.notified().await;
        Ok(((), Some((Bytes::from_static(b"v"), ()))))
    };
    flights.coalesce(&key, (), load, |_, ()| async {}).await
}

#[tokio::test]
async fn a_follower_shares_the_leaders_value_and_no_flight_is_left() {
    let (flights, gate, loads) = (Flights::default(), Notify::new(), AtomicUsize::new(0));
    let leader = call(&flights, &gate, &loads);
    let follower = async {
        // Once the leader is in its load.
        while loads.load(SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let answer = call(&flights, &gate, &loads);
        tokio::pin!(answer);
        assert!(futures_poll_once(answer.as_mut()).await.is_none());
        assert_eq!(flights.followers(&Bytes::from_static(b"k")), Some(1));
        gate.notify_one();
        answer.await
    };
    let (led, followed) = tokio::time::timeout(Duration::from_secs(5), async {
        tokio::join!(leader, follower)
    })
    .await
    .expect("no one waits forever");
    assert!(matches!(led, Ok(Coalesced::Led(()))));
    assert!(matches!(followed, Ok(Coalesced::Shared(v, ())) if v == "v"));
    assert_eq!(loads.load(SeqCst), 1);
    assert_eq!(flights.size().keys, 0);
}

#[tokio::test]
async fn a_cancelled_leader_hands_on_and_try_lead_stands_aside_meanwhile() {
    let flights = Arc::new(Flights::default());
    let (gate, loads) = (Notify::new(), AtomicUsize::new(0));
    let key = Bytes::from_static(b"k");
    {
        let leader = call(&flights, &gate, &loads);
        tokio::pin!(leader);
        assert!(futures_poll_once(leader.as_mut()).await.is_none());
        // A flight is under way: a refresh does not start another.
        let refresh = refresh(&flights, &key).await;
        assert!(refresh.is_none());
        // The leader is dropped here, mid-load.
    }
    assert_eq!(flights.size().keys, 0, "the cancelled flight is gone");
    let refresh = refresh(&flights, &key).await;
    assert!(matches!(refresh, Some(Ok(()))), "no flight: it leads");
    gate.notify_one();
    let next = tokio::time::timeout(Duration::from_secs(5), call(&flights, &gate, &loads));
    assert!(matches!(next.await, Ok(Ok(Coalesced::Led(())))));
}

/// A refresh of `key` that loads nothing to share.
async fn refresh(flights: &Flights, key: &Bytes) -> Option<Result<(), ()>> {
    let load = || async { Ok::<_, ()>(((), None::<(Bytes, ())>)) };
    flights.try_lead(key, load, |_, ()| async {}).await
}

/// Polls `f` once: `Some` if it finished.
async fn futures_poll_once<F: Future + Unpin>(mut f: F) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match std::pin::Pin::new(&mut f).poll(cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        })
    })
    .await
}
