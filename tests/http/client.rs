//! The outbound breaker over the clients people use, against a real axum
//! upstream: hyper-util's `Client` and reqwest's, a `5xx` and a hung
//! upstream counted as failures, rejections as errors the caller can fall
//! back on.

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use fusebox::breaker::{Config, State};
use fusebox::http::HttpClientBreakerLayer;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{Layer, Service, ServiceExt};

/// An upstream: `/ok`, `/fail` (a `500`), `/hang` (never answers);
/// returns its address and how many requests reached it.
async fn upstream() -> (std::net::SocketAddr, Arc<AtomicU32>) {
    let arrived = Arc::new(AtomicU32::new(0));
    let counted = arrived.clone();
    let app = Router::new()
        .route("/ok", get(|| async { "ok" }))
        .route("/fail", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
        .route("/hang", get(std::future::pending::<&'static str>))
        .layer(tower::util::MapRequestLayer::new(
            move |req: axum::extract::Request| {
                counted.fetch_add(1, SeqCst);
                req
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, arrived)
}

fn config(name: &str) -> Config {
    Config::builder()
        .name(name)
        .consecutive_failures(2)
        .open_for(Duration::from_secs(60))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_hyper_utils_client_5xx_and_hangs_trip_it_and_rejections_are_errors() {
    let (addr, arrived) = upstream().await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let get = |path: &str| {
        http::Request::get(format!("http://{addr}{path}"))
            .body(Empty::new())
            .unwrap()
    };

    // 5xx: failures; two in a row open it.
    let layer = HttpClientBreakerLayer::new(config("hyper-5xx"));
    let mut svc = layer.layer(client.clone());
    let res = svc.ready().await.unwrap().call(get("/ok")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    for _ in 0..2 {
        let res = svc.ready().await.unwrap().call(get("/fail")).await.unwrap();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert_eq!(layer.breaker().state(), State::Open);
    let before = arrived.load(SeqCst);
    let e = svc
        .ready()
        .await
        .unwrap()
        .call(get("/ok"))
        .await
        .unwrap_err();
    assert!(e.is_open(), "{e}");
    assert_eq!(arrived.load(SeqCst), before, "rejected without a request");

    // A hung upstream: each call gives up at the deadline, as a failure.
    let layer =
        HttpClientBreakerLayer::new(config("hyper-hang")).deadline(Duration::from_millis(100));
    let mut svc = layer.layer(client);
    for _ in 0..2 {
        let e = svc
            .ready()
            .await
            .unwrap()
            .call(get("/hang"))
            .await
            .unwrap_err();
        assert!(!e.is_open(), "{e}");
    }
    assert_eq!(layer.breaker().state(), State::Open);
    assert_eq!(layer.breaker().snapshot().trips, 1);
}

#[cfg(feature = "reqwest")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_reqwest_as_it_is_with_a_type_an_axum_state_can_name() {
    use fusebox::breaker::CircuitBreaker;
    use fusebox::http::ServerErrors;
    use tower::timeout::Timeout;

    let (addr, arrived) = upstream().await;
    let layer = HttpClientBreakerLayer::new(config("reqwest")).deadline(Duration::from_millis(100));
    // Nameable, for a field of an axum state.
    let mut svc: CircuitBreaker<Timeout<reqwest::Client>, ServerErrors> =
        layer.layer(reqwest::Client::new());
    let get = |path: &str| {
        reqwest::Request::new(
            reqwest::Method::GET,
            format!("http://{addr}{path}").parse().unwrap(),
        )
    };

    let res = svc.ready().await.unwrap().call(get("/ok")).await.unwrap();
    assert_eq!(res.text().await.unwrap(), "ok");
    let res = svc.ready().await.unwrap().call(get("/fail")).await.unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let e = svc
        .ready()
        .await
        .unwrap()
        .call(get("/hang"))
        .await
        .unwrap_err();
    assert!(!e.is_open(), "{e}");
    assert_eq!(layer.breaker().state(), State::Open);
    let before = arrived.load(SeqCst);
    let e = svc
        .ready()
        .await
        .unwrap()
        .call(get("/ok"))
        .await
        .unwrap_err();
    assert!(e.is_open(), "{e}");
    assert_eq!(arrived.load(SeqCst), before);
}
