//! gRPC with tonic on loopback, no protoc: unary response caching in the
//! server, and the breaker as a layer on the client channel.

#[path = "../cache/common.rs"]
mod common;
mod prometheus;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use fusebox::breaker::{CircuitBreakerLayer, Config, State};
use fusebox::cache::Cache;
use fusebox::http::GrpcCacheLayer;
use http::uri::PathAndQuery;
use tonic::transport::{Channel, Server};
use tower::{Layer, Service};

use common::{eventually, RedisServer};

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

/// A hand-written tonic service (what codegen would write).
#[derive(Clone, Default)]
struct Greeter {
    calls: Arc<AtomicU32>,
    /// While set, every call is answered `UNAVAILABLE`.
    down: Arc<std::sync::atomic::AtomicBool>,
}

impl tonic::server::NamedService for Greeter {
    const NAME: &'static str = "demo.Greeter";
}

struct SayHello(Greeter);

impl tonic::server::UnaryService<HelloRequest> for SayHello {
    type Response = HelloReply;
    type Future = BoxFuture<Result<tonic::Response<HelloReply>, tonic::Status>>;

    fn call(&mut self, req: tonic::Request<HelloRequest>) -> Self::Future {
        let (calls, down) = (self.0.calls.clone(), self.0.down.clone());
        Box::pin(async move {
            calls.fetch_add(1, SeqCst);
            if down.load(SeqCst) {
                return Err(tonic::Status::unavailable("overloaded"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            let caller = req.metadata().get("authorization").cloned();
            let name = req.into_inner().name;
            if name == "error" {
                return Err(tonic::Status::not_found("no such greeting"));
            }
            let message = match caller {
                Some(who) => format!("hello {name}, {}", who.to_str().unwrap_or("?")),
                None => format!("hello {name}"),
            };
            Ok(tonic::Response::new(HelloReply { message }))
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
        let me = self.clone();
        Box::pin(async move {
            if req.uri().path() != SAY_HELLO {
                return Ok(tonic::Status::unimplemented("").into_http());
            }
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.unary(SayHello(me), req).await)
        })
    }
}

fn rebuild(bytes: bytes::Bytes) -> tonic::body::Body {
    tonic::body::Body::new(http_body_util::Full::new(bytes))
}

/// Serves the greeter (with the cache layer) on a free port, until the
/// returned sender is dropped (then it closes its connections).
async fn serve(
    cache: Cache,
    greeter: Greeter,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    serve_with(layer(cache), greeter).await
}

/// The cache layer for SayHello, for a minute.
fn layer(cache: Cache) -> GrpcCacheLayer<tonic::body::Body> {
    GrpcCacheLayer::new(cache, rebuild).method(SAY_HELLO, Duration::from_secs(60))
}

/// [`serve`] with the given layer.
async fn serve_with(
    layer: GrpcCacheLayer<tonic::body::Body>,
    greeter: Greeter,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tokio_stream_incoming(listener);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        Server::builder()
            .layer(layer)
            .add_service(greeter)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (addr, stop)
}

fn tokio_stream_incoming(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    tokio_stream::wrappers::TcpListenerStream::new(listener)
}

/// One unary call: the reply (or status) and the x-cache metadata.
/// A failed call's code and message.
type Failed = (tonic::Code, String);

async fn say_hello<T>(
    grpc: &mut tonic::client::Grpc<T>,
    name: &str,
) -> (Result<String, Failed>, String)
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tower::BoxError>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<tower::BoxError> + Send,
{
    say_hello_as(grpc, name, None).await
}

/// [`say_hello`] with `authorization` metadata, if given.
async fn say_hello_as<T>(
    grpc: &mut tonic::client::Grpc<T>,
    name: &str,
    authorization: Option<&'static str>,
) -> (Result<String, Failed>, String)
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tower::BoxError>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<tower::BoxError> + Send,
{
    if let Err(e) = grpc.ready().await {
        let status = tonic::Status::from_error(e.into());
        return (
            Err((status.code(), status.message().to_owned())),
            String::new(),
        );
    }
    let mut req = tonic::Request::new(HelloRequest { name: name.into() });
    if let Some(auth) = authorization {
        let value = tonic::metadata::MetadataValue::from_static(auth);
        req.metadata_mut().insert("authorization", value);
    }
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
                .unwrap_or("")
                .to_owned();
            (Ok(res.into_inner().message), x)
        }
        Err(status) => (
            Err((status.code(), status.message().to_owned())),
            String::new(),
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_responses_are_cached_and_redis_down_changes_nothing_for_callers() {
    let mut redis = RedisServer::start(&[]);
    let cache = Cache::builder()
        .name("grpc")
        .redis_url(redis.url())
        .build()
        .unwrap();
    let greeter = Greeter::default();
    let (addr, _server) = serve(cache, greeter.clone()).await;
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    let mut grpc = tonic::client::Grpc::new(channel);

    assert_eq!(
        say_hello(&mut grpc, "a").await,
        (Ok("hello a".into()), "miss".into())
    );
    assert_eq!(
        say_hello(&mut grpc, "a").await,
        (Ok("hello a".into()), "hit".into())
    );
    assert_eq!(
        say_hello(&mut grpc, "b").await,
        (Ok("hello b".into()), "miss".into())
    );
    assert_eq!(greeter.calls.load(SeqCst), 2);
    // A failed call is never cached.
    for _ in 0..2 {
        let (status, _) = say_hello(&mut grpc, "error").await;
        assert_eq!(status.unwrap_err().0, tonic::Code::NotFound);
    }
    assert_eq!(greeter.calls.load(SeqCst), 4);

    redis.kill();
    for _ in 0..10 {
        let (reply, x) = say_hello(&mut grpc, "a").await;
        assert_eq!((reply.unwrap().as_str(), x.as_str()), ("hello a", "miss"));
    }
    redis.restart();
    let hits = eventually(Duration::from_secs(10), || {
        let mut grpc = grpc.clone();
        async move { say_hello(&mut grpc, "a").await.1 == "hit" }
    })
    .await;
    assert!(hits, "hits resume once Redis is back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_guards_a_client_channel() {
    let redis = RedisServer::start(&[]);
    let cache = Cache::builder()
        .name("grpc-client")
        .redis_url(redis.url())
        .build()
        .unwrap();
    let greeter = Greeter::default();
    let (addr, server) = serve(cache.clone(), greeter.clone()).await;

    // The user's existing channel, wrapped by the breaker.
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_millis(200))
        .connect_lazy();
    let layer = CircuitBreakerLayer::new(
        Config::builder()
            .name("greeter")
            .consecutive_failures(3)
            .open_for(Duration::from_millis(300))
            .build()
            .unwrap(),
    );
    let breaker = layer.breaker().clone();
    let mut grpc = tonic::client::Grpc::new(layer.layer(channel));
    assert_eq!(say_hello(&mut grpc, "x").await.0.unwrap(), "hello x");

    // The server goes away: transport errors trip the breaker; calls then
    // fail fast with the breaker's error.
    drop(server);
    let opened = eventually(Duration::from_secs(5), || {
        let (mut grpc, breaker) = (grpc.clone(), breaker.clone());
        async move {
            let _ = say_hello(&mut grpc, "x").await;
            breaker.state() == State::Open
        }
    })
    .await;
    assert!(opened, "transport failures open the breaker");
    let (status, _) = say_hello(&mut grpc, "x").await;
    let (_, message) = status.unwrap_err();
    assert!(message.contains("circuit breaker"), "{message}");

    // Back on the same port: the breaker closes through a probe.
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    tokio::spawn(async move {
        Server::builder()
            .add_service(greeter)
            .serve_with_incoming(tokio_stream_incoming(listener))
            .await
            .unwrap();
    });
    let closed = eventually(Duration::from_secs(10), || {
        let mut grpc = grpc.clone();
        async move { say_hello(&mut grpc, "y").await.0.is_ok() }
    })
    .await;
    assert!(closed);
    assert_eq!(breaker.state(), State::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_and_authorities_never_share_a_reply_and_keys_stay_small() {
    let redis = RedisServer::start(&[]);
    let cache = Cache::builder()
        .name("grpc-callers")
        .redis_url(redis.url())
        .build()
        .unwrap();
    let greeter = Greeter::default();
    let channel = |addr: std::net::SocketAddr, origin: Option<&str>| {
        let mut endpoint = Channel::from_shared(format!("http://{addr}")).unwrap();
        if let Some(origin) = origin {
            endpoint = endpoint.origin(origin.parse().unwrap());
        }
        tonic::client::Grpc::new(endpoint.connect_lazy())
    };

    // By default, a call with credentials bypasses the cache.
    let (addr, _server) = serve(cache.clone(), greeter.clone()).await;
    let mut grpc = channel(addr, None);
    for _ in 0..2 {
        for who in ["Bearer alice", "Bearer bob"] {
            let (reply, x) = say_hello_as(&mut grpc, "x", Some(who)).await;
            assert_eq!(
                (reply.unwrap(), x.as_str()),
                (format!("hello x, {who}"), "bypass")
            );
        }
    }
    assert_eq!(greeter.calls.load(SeqCst), 4);
    assert_eq!(redis.cmd(&["DBSIZE"]), ":0", "nothing stored");

    // Two authorities on one server: an entry each.
    let mut a = channel(addr, Some("http://a.test"));
    let mut b = channel(addr, Some("http://b.test"));
    assert_eq!(say_hello(&mut a, "y").await.1, "miss");
    assert_eq!(say_hello(&mut b, "y").await.1, "miss");
    assert_eq!(say_hello(&mut a, "y").await.1, "hit");
    assert_eq!(say_hello(&mut b, "y").await.1, "hit");

    // Keyed on authorization: one entry per caller, the token hashed.
    let layer = layer(cache.clone()).vary(["authorization"]);
    let (per_caller, _server2) = serve_with(layer, greeter.clone()).await;
    let mut grpc = channel(per_caller, None);
    for x in ["miss", "hit"] {
        for who in ["Bearer alice", "Bearer bob"] {
            let (reply, got) = say_hello_as(&mut grpc, "z", Some(who)).await;
            assert_eq!(
                (reply.unwrap(), got.as_str()),
                (format!("hello z, {who}"), x)
            );
        }
    }
    // A 60 KiB message: the key holds its hash, not its bytes.
    let long = "n".repeat(60 << 10);
    assert_eq!(say_hello(&mut grpc, &long).await.1, "miss");
    let keys = redis.cmd(&["KEYS", "*"]);
    assert!(!keys.contains("alice") && !keys.contains("bob"), "{keys}");
    for key in keys.lines() {
        assert!(key.starts_with("grpc:/demo.Greeter/SayHello#"), "{key}");
        assert!(key.len() < 100, "{} bytes", key.len());
    }
    assert_eq!(keys.lines().count(), 5, "{keys}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_breaker_trips_on_unavailable_and_answers_unavailable_itself() {
    let redis = RedisServer::start(&[]);
    let cache = Cache::builder()
        .name("grpc-breaker")
        .redis_url(redis.url())
        .build()
        .unwrap();
    let greeter = Greeter::default();
    // No method cached: every call reaches the greeter.
    let layer = GrpcCacheLayer::new(cache, rebuild);
    let (addr, _server) = serve_with(layer, greeter.clone()).await;
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    let config = Config::builder()
        .name("greeter-grpc")
        .consecutive_failures(3)
        .open_for(Duration::from_millis(300))
        .open_jitter(0.0)
        .build()
        .unwrap();
    let layer = fusebox::http::GrpcBreakerLayer::new(config);
    let breaker = layer.breaker().clone();
    let mut transitions = breaker.subscribe();
    let mut grpc = tonic::client::Grpc::new(layer.layer(channel));

    // The caller's own errors do not count.
    for _ in 0..5 {
        let (status, _) = say_hello(&mut grpc, "error").await;
        assert_eq!(status.unwrap_err().0, tonic::Code::NotFound);
    }
    assert_eq!(breaker.state(), State::Closed);
    // The server says UNAVAILABLE three times: the circuit opens, and the
    // client gets UNAVAILABLE from the breaker without calling the server.
    greeter.down.store(true, SeqCst);
    for _ in 0..3 {
        let (status, _) = say_hello(&mut grpc, "x").await;
        assert_eq!(
            status.unwrap_err(),
            (tonic::Code::Unavailable, "overloaded".into())
        );
    }
    assert_eq!(breaker.state(), State::Open);
    let served = greeter.calls.load(SeqCst);
    let (status, _) = say_hello(&mut grpc, "x").await;
    let (code, message) = status.unwrap_err();
    assert_eq!(code, tonic::Code::Unavailable);
    assert!(message.contains("circuit breaker"), "{message}");
    assert_eq!(
        greeter.calls.load(SeqCst),
        served,
        "the server was not called"
    );

    // The server recovers; after the open period a probe closes the circuit.
    greeter.down.store(false, SeqCst);
    let opened = transitions.recv().await.unwrap();
    assert_eq!(opened.to, State::Open);
    let half_open = tokio::time::timeout(Duration::from_secs(5), transitions.recv()).await;
    assert_eq!(half_open.unwrap().unwrap().to, State::HalfOpen);
    assert_eq!(say_hello(&mut grpc, "y").await.0.unwrap(), "hello y");
    assert_eq!(breaker.state(), State::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_near_cache_and_redis_down_a_reply_past_its_ttl_is_no_hit() {
    let mut redis = RedisServer::start(&[]);
    let cache = Cache::builder()
        .name("grpc-near")
        .redis_url(redis.url())
        .near_cache(fusebox::cache::NearCache::new())
        .build()
        .unwrap();
    let greeter = Greeter::default();
    let layer = GrpcCacheLayer::new(cache, rebuild).method(SAY_HELLO, Duration::from_secs(1));
    let (addr, _server) = serve_with(layer, greeter.clone()).await;
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    let mut grpc = tonic::client::Grpc::new(channel);
    assert_eq!(say_hello(&mut grpc, "a").await.1, "miss");
    assert_eq!(say_hello(&mut grpc, "a").await.1, "hit");
    redis.kill();
    // Past the method's TTL of 1 s, with L1 still holding the reply.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let calls = greeter.calls.load(SeqCst);
    let (reply, x) = say_hello(&mut grpc, "a").await;
    assert_eq!((reply.unwrap().as_str(), x.as_str()), ("hello a", "miss"));
    assert_eq!(greeter.calls.load(SeqCst), calls + 1);
}
