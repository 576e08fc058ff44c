//! What caches count, as a user's `/metrics` shows it: rendered by
//! metrics-exporter-prometheus and checked by `promtool check metrics`
//! (Debian: `apt-get install prometheus`). Reads by outcome for a plain
//! cache, responses by outcome and stores for the HTTP and gRPC caches,
//! call latency histograms, and a `# HELP` for every metric.

use axum::routing::get;
use axum::Router;
use fusebox::cache::Cache;
use fusebox::http::HttpCacheLayer;
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

use super::{layer, say_hello, serve_with, Greeter, RedisServer};

/// The value of the sample of `metric` whose labels include every one of
/// `labels`, or 0 if there is none.
fn sample(text: &str, metric: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with(['{', ' ']))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse().ok()))
        .next()
        .unwrap_or(0.0)
}

/// One HTTP/1.1 request on a fresh connection; the `x-cache` header.
async fn request(addr: std::net::SocketAddr, method: &str, extra: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("{method} /page HTTP/1.1\r\nhost: test\r\nconnection: close\r\n{extra}\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("x-cache: "))
        .unwrap_or("")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_shows_what_each_cache_did_and_promtool_accepts_it() {
    // Installed before these caches are built (other tests of this binary
    // may have built theirs before: their metrics are not looked at).
    let handle = PrometheusBuilder::new().install_recorder().unwrap();
    let redis = RedisServer::start(&[]);
    let cache = |name: &str| {
        Cache::builder()
            .name(name)
            .prefix(format!("{name}:"))
            .redis_url(redis.url())
            .build()
            .unwrap()
    };

    // A plain cache: 3 hits, 2 misses.
    let plain = cache("m-plain");
    assert_eq!(plain.set("k", "v").await, fusebox::cache::Write::Done);
    for _ in 0..3 {
        assert!(plain.get("k").await.is_some());
    }
    for _ in 0..2 {
        assert!(plain.get("absent").await.is_none());
    }

    // The HTTP cache: a miss (stored), a hit, a bypass for the method and
    // one for the request (a credential).
    let app = Router::new()
        .route(
            "/page",
            get(|| async { ([("cache-control", "public, max-age=60")], "hello") })
                .post(|| async { "posted" }),
        )
        .layer(HttpCacheLayer::new(cache("m-pages")));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    assert_eq!(request(addr, "GET", "").await, "miss");
    assert_eq!(request(addr, "GET", "").await, "hit");
    assert_eq!(
        request(addr, "POST", "content-length: 0\r\n").await,
        "bypass"
    );
    assert_eq!(
        request(addr, "GET", "authorization: Bearer x\r\n").await,
        "bypass"
    );

    // The gRPC cache: a miss (stored), then a hit.
    let (addr, _server) = serve_with(layer(cache("m-grpc")), Greeter::default()).await;
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    let mut grpc = tonic::client::Grpc::new(channel);
    assert_eq!(say_hello(&mut grpc, "a").await.1, "miss");
    assert_eq!(say_hello(&mut grpc, "a").await.1, "hit");

    // A breaker that times its calls.
    let breaker = fusebox::breaker::CircuitBreakerLayer::new(
        fusebox::breaker::Config::builder()
            .name("m-timed")
            .record_latency(true)
            .build()
            .unwrap(),
    );
    let mut svc = tower::Layer::layer(
        &breaker,
        tower::service_fn(|_: ()| async { Ok::<_, std::convert::Infallible>(()) }),
    );
    for _ in 0..4 {
        tower::ServiceExt::ready(&mut svc).await.unwrap();
        tower::Service::call(&mut svc, ()).await.unwrap();
    }

    let text = handle.render();
    if std::env::var_os("FUSEBOX_SHOW_METRICS").is_some() {
        eprintln!("{text}");
    }
    let reads = |cache, outcome| {
        sample(
            &text,
            "fusebox_cache_reads_total",
            &[("cache", cache), ("outcome", outcome)],
        )
    };
    assert_eq!(reads("m-plain", "hit"), 3.0, "{text}");
    assert_eq!(reads("m-plain", "miss"), 2.0, "{text}");
    let responses = |cache, outcome, extra: &[(&str, &str)]| {
        let mut labels = vec![("cache", cache), ("outcome", outcome)];
        labels.extend_from_slice(extra);
        sample(&text, "fusebox_http_responses_total", &labels)
    };
    assert_eq!(
        responses("m-pages", "miss", &[("layer", "http")]),
        1.0,
        "{text}"
    );
    assert_eq!(responses("m-pages", "hit", &[]), 1.0, "{text}");
    assert_eq!(
        responses("m-pages", "bypass", &[("reason", "method")]),
        1.0,
        "{text}"
    );
    assert_eq!(
        responses("m-pages", "bypass", &[("reason", "request")]),
        1.0,
        "{text}"
    );
    assert_eq!(
        responses("m-grpc", "miss", &[("layer", "grpc")]),
        1.0,
        "{text}"
    );
    assert_eq!(responses("m-grpc", "hit", &[]), 1.0, "{text}");
    for cache in ["m-pages", "m-grpc"] {
        let stores = sample(&text, "fusebox_http_stores_total", &[("cache", cache)]);
        assert_eq!(stores, 1.0, "{cache}: {text}");
    }
    // Every call timed: 1 set and 5 gets of the plain cache.
    let calls = |op| {
        sample(
            &text,
            "fusebox_cache_call_duration_seconds_count",
            &[("cache", "m-plain"), ("op", op)],
        )
    };
    assert_eq!((calls("set"), calls("get")), (1.0, 5.0), "{text}");
    let timed = sample(
        &text,
        "fusebox_breaker_call_duration_seconds_count",
        &[("breaker", "m-timed")],
    );
    assert_eq!(timed, 4.0, "{text}");
    for metric in [
        "fusebox_cache_reads_total",
        "fusebox_cache_call_duration_seconds",
        "fusebox_http_responses_total",
        "fusebox_http_stores_total",
        "fusebox_breaker_state",
        "fusebox_breaker_call_duration_seconds",
    ] {
        assert!(
            text.contains(&format!("# HELP {metric} ")),
            "{metric} described: {text}"
        );
    }

    // promtool reads it as Prometheus would, and finds nothing to lint.
    let mut promtool = match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .output_with_stdin(&text)
    {
        Ok(out) => out,
        Err(e) => {
            panic!("promtool not runnable ({e}): install it with `apt-get install prometheus`")
        }
    };
    eprintln!(
        "promtool check metrics on {} lines: {}",
        text.lines().count(),
        promtool.status
    );
    assert!(
        promtool.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&promtool.stdout),
        String::from_utf8_lossy(&std::mem::take(&mut promtool.stderr)),
    );
}

/// `Command::output` with `input` on the child's stdin.
trait OutputWithStdin {
    fn output_with_stdin(&mut self, input: &str) -> std::io::Result<std::process::Output>;
}

impl OutputWithStdin for std::process::Command {
    fn output_with_stdin(&mut self, input: &str) -> std::io::Result<std::process::Output> {
        use std::io::Write;
        let mut child = self
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(input.as_bytes())?;
        child.wait_with_output()
    }
}
