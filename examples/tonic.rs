//! gRPC with tonic, both ways, without protoc:
//!
//! * the server caches unary responses through fusebox
//!   ([`GrpcCacheLayer`]: key from the method path and a hash of the
//!   authority, keyed metadata and request bytes);
//! * the client wraps its existing `Channel` in a circuit breaker.
//!
//! ```sh
//! cargo run --example tonic --features http
//! ```
//!
//! Starts its own `redis-server` on a free port if one is on `PATH` (without
//! one, the cache is simply always missing: fail-open).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use fusebox::breaker::Config;
use fusebox::cache::Cache;
use fusebox::http::{GrpcBreakerLayer, GrpcCacheLayer};
use http::uri::PathAndQuery;
use tonic::transport::{Channel, Server};
use tower::{Layer, Service};

/// The messages, as prost derives them (no .proto, no protoc).
/// A greeting request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloRequest {
    /// Whom to greet.
    #[prost(string, tag = "1")]
    pub name: String,
}

/// The greeting.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloReply {
    /// Its text.
    #[prost(string, tag = "1")]
    pub message: String,
}

const SAY_HELLO: &str = "/demo.Greeter/SayHello";

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The service, as tonic's codegen would write it.
#[derive(Clone, Default)]
struct Greeter;

impl tonic::server::NamedService for Greeter {
    const NAME: &'static str = "demo.Greeter";
}

struct SayHello;

impl tonic::server::UnaryService<HelloRequest> for SayHello {
    type Response = HelloReply;
    type Future = BoxFuture<Result<tonic::Response<HelloReply>, tonic::Status>>;

    fn call(&mut self, req: tonic::Request<HelloRequest>) -> Self::Future {
        Box::pin(async move {
            // The slow source of truth.
            tokio::time::sleep(Duration::from_millis(30)).await;
            let name = req.into_inner().name;
            Ok(tonic::Response::new(HelloReply {
                message: format!("hello {name}"),
            }))
        })
    }
}

impl Service<http::Request<tonic::body::Body>> for Greeter {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            if req.uri().path() != SAY_HELLO {
                return Ok(tonic::Status::unimplemented("").into_http());
            }
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.unary(SayHello, req).await)
        })
    }
}

/// Serves until the returned sender is dropped (then closes its
/// connections, as a real shutdown would).
async fn serve(
    cache: Cache,
    listener: tokio::net::TcpListener,
) -> tokio::sync::oneshot::Sender<()> {
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let cached = GrpcCacheLayer::new(cache, |b| {
            tonic::body::Body::new(http_body_util::Full::new(b))
        })
        .method(SAY_HELLO, Duration::from_secs(60));
        let _ = Server::builder()
            .layer(cached)
            .add_service(Greeter)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await;
    });
    stop
}

async fn call<T>(grpc: &mut tonic::client::Grpc<T>, name: &str) -> String
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tower::BoxError>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<tower::BoxError> + Send,
{
    let start = Instant::now();
    let outcome = match grpc.ready().await {
        Err(e) => format!("error: {}", tonic::Status::from_error(e.into()).message()),
        Ok(()) => {
            let req = tonic::Request::new(HelloRequest { name: name.into() });
            let path = PathAndQuery::from_static(SAY_HELLO);
            match grpc
                .unary::<_, HelloReply, _>(req, path, tonic_prost::ProstCodec::default())
                .await
            {
                Ok(res) => {
                    let x = res
                        .metadata()
                        .get("x-cache")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                        .to_owned();
                    format!("{:<12} x-cache: {x}", res.into_inner().message)
                }
                Err(status) => format!("error: {}", status.message()),
            }
        }
    };
    format!(
        "{outcome:<50} {:>6.1} ms",
        start.elapsed().as_secs_f64() * 1e3
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A redis-server of our own on a free port, if one is installed.
    let redis = fusebox_testkit::RedisServer::try_start(&[]);
    let url = match &redis {
        Ok(redis) => redis.url(),
        Err(why) => {
            println!("({why}; the cache just misses)");
            format!("redis://127.0.0.1:{}", fusebox_testkit::free_port())
        }
    };
    let cache = Cache::builder().name("grpc-demo").redis_url(url).build()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = serve(cache.clone(), listener).await;

    // The client: an existing channel, guarded by a breaker.
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_millis(200))
        .connect_lazy();
    // Trips on UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED (not on
    // NOT_FOUND and the like); rejects with UNAVAILABLE.
    let breaker = GrpcBreakerLayer::new(
        Config::builder()
            .name("greeter")
            .consecutive_failures(3)
            .open_for(Duration::from_secs(1))
            .build()?,
    );
    let state = breaker.breaker().clone();
    let mut grpc = tonic::client::Grpc::new(breaker.layer(channel));

    println!("server-side cache:");
    println!("  {}", call(&mut grpc, "ada").await);
    println!("  {}", call(&mut grpc, "ada").await);
    drop(redis);
    println!("  -- redis-server killed --");
    for _ in 0..3 {
        println!("  {}", call(&mut grpc, "ada").await);
    }

    println!("client-side breaker:");
    drop(server);
    println!("  -- server stopped --");
    for _ in 0..6 {
        println!(
            "  {}  breaker {}",
            call(&mut grpc, "ada").await,
            state.state()
        );
    }
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let _server = serve(cache, listener).await;
    println!("  -- server back --");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..2 {
        println!(
            "  {}  breaker {}",
            call(&mut grpc, "ada").await,
            state.state()
        );
    }
    Ok(())
}
