//! A caching reverse proxy: every request is forwarded to one origin, and
//! its answer returned unchanged, with [`HttpCacheLayer`] in front. This
//! is how `scripts/cache-tests.sh` puts fusebox in front of the HTTP
//! caching test suite's origin (cache-tests.fyi), as Varnish or nginx
//! would be.
//!
//! ```sh
//! cargo run --release --example gateway --features http -- \
//!     --listen 127.0.0.1:8001 --origin 127.0.0.1:8000 --redis redis://127.0.0.1:6379
//! ```
//!
//! Every flag has that default. The cache is named `gateway`, with the
//! heuristic freshness browsers and proxies use (10 % of the time since
//! `Last-Modified`), and serves a stored copy for up to a minute past its
//! freshness when the origin fails, where the response does not forbid it.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::uri::{PathAndQuery, Uri};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use fusebox::cache::Cache;
use fusebox::http::HttpCacheLayer;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Where requests go.
#[derive(Clone)]
struct Origin {
    client: Client<HttpConnector, Body>,
    authority: String,
}

/// Forwards `req` to the origin and returns what it answers, unchanged; a
/// `502` if the origin cannot be reached.
async fn forward(State(origin): State<Origin>, mut req: Request) -> Response {
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let uri = Uri::builder()
        .scheme("http")
        .authority(origin.authority.as_str())
        .path_and_query(path)
        .build();
    let Ok(uri) = uri else {
        return (StatusCode::BAD_REQUEST, "bad request target").into_response();
    };
    *req.uri_mut() = uri;
    match origin.client.request(req).await {
        Ok(res) => res.map(Body::new),
        Err(e) => (StatusCode::BAD_GATEWAY, format!("origin: {e}\n")).into_response(),
    }
}

fn flag(args: &[String], name: &str, default: &str) -> String {
    args.windows(2)
        .find(|w| w[0] == name)
        .map_or_else(|| default.to_owned(), |w| w[1].clone())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let listen: SocketAddr = flag(&args, "--listen", "127.0.0.1:8001").parse()?;
    let authority = flag(&args, "--origin", "127.0.0.1:8000");
    let redis = flag(&args, "--redis", "redis://127.0.0.1:6379");
    let cache = Cache::builder()
        .name("gateway")
        .redis_url(redis.as_str())
        .build()?;
    let origin = Origin {
        client: Client::builder(TokioExecutor::new()).build_http(),
        authority,
    };
    let app = Router::new().fallback(forward).with_state(origin).layer(
        HttpCacheLayer::new(cache)
            .heuristic_freshness(10)
            .serve_stale_on_error(Duration::from_secs(60)),
    );
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!(
        "gateway: {listen} -> http://{}",
        flag(&args, "--origin", "127.0.0.1:8000")
    );
    axum::serve(listener, app).await?;
    Ok(())
}
