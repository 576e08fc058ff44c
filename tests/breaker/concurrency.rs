//! Many tasks on a multi-thread runtime hammering one breaker through trips
//! and recoveries.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use fusebox::breaker::{Breaker, State};
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};

use crate::common::exact;

const PROBES: u32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn probe_limit_holds_and_no_permit_leaks_under_contention() {
    let breaker = Breaker::new(
        exact()
            .consecutive_failures(5)
            .open_for(Duration::from_millis(30))
            .half_open_probes(PROBES)
            .half_open_successes(4)
            .build()
            .unwrap(),
    );
    let healthy = Arc::new(AtomicBool::new(true));
    let probing = Arc::new(AtomicU32::new(0));
    let max_probing = Arc::new(AtomicU32::new(0));
    let inner = {
        let (healthy, probing, max_probing, breaker) = (
            healthy.clone(),
            probing.clone(),
            max_probing.clone(),
            breaker.clone(),
        );
        service_fn(move |()| {
            let (healthy, probing, max_probing) =
                (healthy.clone(), probing.clone(), max_probing.clone());
            // Closed calls complete without yielding; only probes are in
            // flight while half-open, and they overlap by yielding.
            let probe = breaker.state() == State::HalfOpen;
            async move {
                if probe {
                    let n = probing.fetch_add(1, SeqCst) + 1;
                    max_probing.fetch_max(n, SeqCst);
                    for _ in 0..3 {
                        tokio::task::yield_now().await;
                    }
                    probing.fetch_sub(1, SeqCst);
                }
                if healthy.load(SeqCst) {
                    Ok(())
                } else {
                    Err::<(), BoxError>("down".into())
                }
            }
        })
    };
    let svc = breaker.layer().layer(inner);
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = vec![];
    for _ in 0..16 {
        let (mut svc, stop) = (svc.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut rejected = 0u64;
            while !stop.load(SeqCst) {
                match svc.ready().await.unwrap().call(()).await {
                    Err(e) if e.is_open() => {
                        rejected += 1;
                        tokio::task::yield_now().await;
                    }
                    _ => tokio::task::yield_now().await,
                }
            }
            rejected
        }));
    }
    let mut events = breaker.subscribe();
    let mut recoveries = 0;
    for round in 0..6 {
        healthy.store(false, SeqCst);
        wait_for(&mut events, State::Open).await;
        if round % 2 == 0 {
            // Let it fail a probe or two before recovering.
            wait_for(&mut events, State::HalfOpen).await;
        }
        healthy.store(true, SeqCst);
        wait_for(&mut events, State::Closed).await;
        recoveries += 1;
    }
    stop.store(true, SeqCst);
    let mut rejected = 0;
    for t in tasks {
        rejected += tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(recoveries, 6);
    assert!(rejected > 0);
    assert!(
        max_probing.load(SeqCst) <= PROBES,
        "{} probes at once",
        max_probing.load(SeqCst)
    );

    // No slot leaked: a fresh half-open period admits exactly PROBES probes.
    healthy.store(false, SeqCst);
    let mut svc = svc;
    while breaker.state() != State::Open {
        let _ = svc.ready().await.unwrap().call(()).await;
    }
    wait_for(&mut events, State::HalfOpen).await;
    let mut held = vec![];
    for _ in 0..PROBES + 2 {
        let mut s = svc.clone();
        s.ready().await.unwrap();
        held.push(s);
    }
    assert_eq!(breaker.snapshot().probes_in_flight, PROBES);
    drop(held);
    assert_eq!(breaker.snapshot().probes_in_flight, 0);
}

async fn wait_for(
    events: &mut tokio::sync::broadcast::Receiver<fusebox::breaker::Transition>,
    state: State,
) {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.recv().await {
                Ok(t) if t.to == state => return,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never reached {state}"))
}
