//! The service under soak and its clients, each checking every value it
//! is given.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use fusebox::backend::ClusterBackend;
use fusebox::cache::{Cache, NearCache, Write};
use fusebox::http::HttpCacheLayer;
use fusebox::watchdog::Watchdog;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinHandle;

use crate::faults::Servers;
use crate::Soak;

const PRODUCTS: usize = 500;
const USERS: u64 = 7;
const SHARED_KEYS: usize = 20;
/// How long a write another client confirmed may take to be seen.
const SETTLE: Duration = Duration::from_secs(2);

/// The service: its caches and its address.
pub(crate) struct Service {
    /// The service's cache: near cache and watchdog on.
    pub(crate) pages: Cache,
    /// Another client of the same Redis, without a near cache.
    writer: Cache,
    /// A cache over the cluster.
    pub(crate) shards: Cache<ClusterBackend>,
    addr: std::net::SocketAddr,
    /// The writer's last confirmed writes of each `shared:<j>`.
    confirmed: Arc<Vec<Mutex<Confirmed>>>,
}

/// A key's last confirmed writes: version, and when (the newest last).
type Confirmed = std::collections::VecDeque<(u64, Instant)>;

/// How many confirmed writes of a key are remembered: well over `SETTLE`'s
/// worth.
const REMEMBERED: usize = 256;

/// The source of truth: each product's version, bumped by `POST`.
#[derive(Clone)]
struct Truth(Arc<Vec<AtomicU64>>);

async fn product(State(truth): State<Truth>, Path(id): Path<usize>) -> impl IntoResponse {
    let Some(version) = truth.0.get(id) else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CACHE_CONTROL, "no-store")],
            String::new(),
        );
    };
    let v = version.load(Relaxed);
    tokio::time::sleep(Duration::from_millis(2)).await;
    let page = format!("product {id} v{v} {}", "·".repeat(400));
    (
        StatusCode::OK,
        [(
            header::CACHE_CONTROL,
            "public, max-age=2, stale-while-revalidate=5",
        )],
        page,
    )
}

async fn update(State(truth): State<Truth>, Path(id): Path<usize>) -> impl IntoResponse {
    let Some(version) = truth.0.get(id) else {
        return (StatusCode::NOT_FOUND, String::new());
    };
    let v = version.fetch_add(1, Relaxed) + 1;
    (StatusCode::OK, format!("product {id} v{v}"))
}

/// A page for one user only, marked `Private` in mixed case.
async fn me(headers: HeaderMap) -> impl IntoResponse {
    let user = headers
        .get("x-user")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("nobody")
        .to_owned();
    (
        [(header::CACHE_CONTROL, "Private, max-age=60")],
        format!("user {user}"),
    )
}

/// A page in one region's language: its responses vary on `X-Region`, a
/// header the layer's key does not hold, so each region's copy is a
/// variant of the URL.
async fn catalog(Path(id): Path<usize>, headers: HeaderMap) -> impl IntoResponse {
    let region = headers
        .get("x-region")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_owned();
    (
        [
            (header::CACHE_CONTROL, "public, max-age=2".to_owned()),
            (header::VARY, "X-Region".to_owned()),
        ],
        format!("catalog {id} region {region}"),
    )
}

pub(crate) async fn start(
    soak: &Arc<Soak>,
    redis: &Servers,
) -> Result<Service, Box<dyn std::error::Error>> {
    let _ = soak;
    let pages = Cache::builder()
        .name("pages")
        .near_cache(NearCache::new())
        .watchdog(Watchdog::builder().name("redis"))
        .redis_url(redis.url())
        .build()?;
    let writer = Cache::builder()
        .name("writer")
        .redis_url(redis.url())
        .build()?;
    let shards = Cache::builder()
        .name("shards")
        .backend(ClusterBackend::new(
            redis.cluster_urls(),
            Duration::from_millis(200),
        )?)
        .build()?;
    let truth = Truth(Arc::new((0..PRODUCTS).map(|_| AtomicU64::new(1)).collect()));
    let app = Router::new()
        .route("/product/{id}", get(product).post(update))
        .route("/me", get(me))
        .route("/catalog/{id}", get(catalog))
        .with_state(truth)
        .layer(HttpCacheLayer::new(pages.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    let confirmed = Arc::new(
        (0..SHARED_KEYS)
            .map(|_| Mutex::new(Confirmed::new()))
            .collect(),
    );
    Ok(Service {
        pages,
        writer,
        shards,
        addr,
        confirmed,
    })
}

/// A small xorshift for the clients' choices.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The version in `<what> v<n>…`, if the text starts with `what`.
fn version(text: &[u8], what: &str) -> Option<u64> {
    let rest = text.strip_prefix(what.as_bytes())?.strip_prefix(b" v")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// One request: status, body, and whether a cache answered it.
async fn call(
    client: &HttpClient,
    soak: &Soak,
    method: Method,
    uri: &str,
    header: Option<(&str, String)>,
) -> Option<(StatusCode, Bytes, bool)> {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some((name, value)) = header {
        req = req.header(name, value);
    }
    let req = req.body(Full::new(Bytes::new())).expect("a request");
    let answer = tokio::time::timeout(Duration::from_secs(10), async {
        let res = client.request(req).await.map_err(|e| e.to_string())?;
        let (parts, body) = res.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        let cached = parts
            .headers
            .get("x-cache")
            .is_some_and(|v| v == "hit" || v == "stale");
        Ok::<_, String>((parts.status, body, cached))
    })
    .await;
    soak.calls.fetch_add(1, Relaxed);
    match answer {
        Ok(Ok(a)) => {
            if a.2 {
                soak.cached.fetch_add(1, Relaxed);
            }
            Some(a)
        }
        Ok(Err(e)) => {
            soak.error(format!("{uri}: {e}"));
            None
        }
        Err(_) => {
            soak.error(format!("{uri}: no answer within 10 s"));
            None
        }
    }
}

/// Browses products and the per-user page; now and then changes a
/// product and reads it back.
async fn browse(soak: Arc<Soak>, addr: std::net::SocketAddr, seed: u64, stop: Arc<AtomicBool>) {
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let mut dice = Dice(seed);
    let base = format!("http://{addr}");
    while !stop.load(Relaxed) {
        let id = dice.roll(PRODUCTS as u64).min(dice.roll(PRODUCTS as u64));
        let uri = format!("{base}/product/{id}");
        let what = format!("product {id}");
        match dice.roll(40) {
            0 => {
                // Change it, then read it: never the page from before.
                let posted = call(&client, &soak, Method::POST, &uri, None).await;
                let Some((StatusCode::OK, body, _)) = posted else {
                    continue;
                };
                let Some(v) = version(&body, &what) else {
                    soak.wrong(
                        "POST answer",
                        format!("POST {uri} answered {:?}", String::from_utf8_lossy(&body)),
                    );
                    continue;
                };
                if let Some((_, body, cached)) = call(&client, &soak, Method::GET, &uri, None).await
                {
                    soak.checked("an old page after a POST");
                    match version(&body, &what) {
                        Some(seen) if seen >= v => {}
                        seen => soak.wrong(
                            "an old page after a POST",
                            format!(
                            "GET {uri} after POST made v{v}: {seen:?} (from the cache: {cached})"
                        ),
                        ),
                    }
                }
            }
            1..=4 => {
                let user = dice.roll(USERS);
                if let Some((status, body, _)) = call(
                    &client,
                    &soak,
                    Method::GET,
                    &format!("{base}/me"),
                    Some(("x-user", user.to_string())),
                )
                .await
                {
                    soak.checked("another user's page");
                    if status != StatusCode::OK {
                        soak.error(format!("/me answered {status}"));
                    } else if body != format!("user {user}").as_bytes() {
                        soak.wrong(
                            "another user's page",
                            format!("user {user} was given {:?}", String::from_utf8_lossy(&body)),
                        );
                    }
                }
            }
            5..=8 => {
                // One of a few regions' variants of a few pages.
                let (page, region) = (dice.roll(20), dice.roll(4));
                let header = Some(("x-region", format!("r{region}")));
                let uri = format!("{base}/catalog/{page}");
                if let Some((status, body, _)) =
                    call(&client, &soak, Method::GET, &uri, header).await
                {
                    soak.checked("another region's variant");
                    let want = format!("catalog {page} region r{region}");
                    if status != StatusCode::OK {
                        soak.error(format!("{uri} answered {status}"));
                    } else if body != want.as_bytes() {
                        soak.wrong(
                            "another region's variant",
                            format!(
                                "{uri} for r{region} was given {:?}",
                                String::from_utf8_lossy(&body)
                            ),
                        );
                    }
                }
            }
            _ => {
                if let Some((status, body, _)) = call(&client, &soak, Method::GET, &uri, None).await
                {
                    soak.checked("another product's page");
                    if status != StatusCode::OK {
                        soak.error(format!("{uri} answered {status}"));
                    } else if version(&body, &what).is_none() {
                        soak.wrong(
                            "another product's page",
                            format!(
                                "{uri} was given {:?}",
                                String::from_utf8_lossy(&body[..body.len().min(40)])
                            ),
                        );
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Writes and reads its own keys through `cache`: a value for another key
/// is wrong, and so is one older than its own confirmed write, unless
/// `lossy` (a cluster loses confirmed writes in a failover: counted apart).
async fn own_keys<B>(
    soak: Arc<Soak>,
    cache: Cache<B>,
    prefix: String,
    lossy: bool,
    seed: u64,
    stop: Arc<AtomicBool>,
) where
    B: fusebox::cache::Backend + Sync,
{
    let mut dice = Dice(seed);
    let mut confirmed = vec![0u64; 50];
    let mut next = 1u64;
    while !stop.load(Relaxed) {
        let j = dice.roll(50) as usize;
        let key = format!("{prefix}:{j}");
        match dice.roll(8) {
            0..=2 => {
                let value = format!("{key} v{next}");
                if cache
                    .set_with_ttl(&key, value, Duration::from_secs(60))
                    .await
                    == Write::Done
                {
                    confirmed[j] = next;
                }
                next += 1;
            }
            3 => {
                // A single-flight load of a key shared by every client.
                let k = format!("load:{}", dice.roll(20));
                let want = format!("{k} v1");
                let got = cache
                    .get_or_load(&k, || async {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        Ok::<_, std::convert::Infallible>(want.clone())
                    })
                    .await;
                soak.checked("a loaded value for another key");
                match got {
                    Ok(v) if v == want.as_bytes() => {}
                    other => soak.wrong(
                        "a loaded value for another key",
                        format!("{k}: loaded {other:?}"),
                    ),
                }
            }
            _ => {
                let got = cache.get(&key).await;
                if got.is_some() {
                    soak.cached.fetch_add(1, Relaxed);
                }
                if got.is_some() {
                    soak.checked(if lossy {
                        "older than this client's own write (cluster)"
                    } else {
                        "older than this client's own write"
                    });
                }
                match got.as_deref().map(|v| version(v, &key)) {
                    None => {}
                    Some(Some(v)) if v >= confirmed[j] => {}
                    Some(Some(v)) if lossy => {
                        soak.lost.fetch_add(1, Relaxed);
                        confirmed[j] = v;
                    }
                    Some(v) => soak.wrong(
                        "older than this client's own write",
                        format!(
                            "{key}: got v{v:?} after its own write of v{} was confirmed",
                            confirmed[j]
                        ),
                    ),
                }
            }
        }
        soak.calls.fetch_add(1, Relaxed);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Another client (no near cache) writes `shared:<j>`, noting each
/// confirmed write.
async fn write_shared(soak: Arc<Soak>, service: Arc<SharedParts>, stop: Arc<AtomicBool>) {
    let mut n = 1u64;
    while !stop.load(Relaxed) {
        for j in 0..SHARED_KEYS {
            let key = format!("shared:{j}");
            let done = service
                .writer
                .set_with_ttl(&key, format!("{key} v{n}"), Duration::from_secs(60))
                .await;
            if done == Write::Done {
                let mut confirmed = service.confirmed[j].lock().unwrap();
                if confirmed.len() == REMEMBERED {
                    confirmed.pop_front();
                }
                confirmed.push_back((n, Instant::now()));
            }
            soak.calls.fetch_add(1, Relaxed);
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The service's cache reads `shared:<j>` through its near cache: once
/// Redis has been healthy for `SETTLE`, a value older than a write
/// confirmed `SETTLE` before the read is wrong, unless the reading cache's
/// breaker was not closed (its near cache then serves stale by design).
async fn read_shared(soak: Arc<Soak>, service: Arc<SharedParts>, stop: Arc<AtomicBool>) {
    while !stop.load(Relaxed) {
        for j in 0..SHARED_KEYS {
            let key = format!("shared:{j}");
            let started = Instant::now();
            // The newest write confirmed `SETTLE` before this read.
            let floor = service.confirmed[j]
                .lock()
                .unwrap()
                .iter()
                .rev()
                .find(|(_, at)| *at + SETTLE <= started)
                .copied();
            // Stale reads are by design while this cache's breaker is not
            // closed (it still counts Redis as failing): not checked then.
            // Nor when it served a stale copy for a read that failed.
            let stale = || service.pages.near_stats().map_or(0, |n| n.stale);
            let stale_before = stale();
            let closed = || service.pages.breaker().state() == fusebox::breaker::State::Closed;
            let settled = soak.settled(SETTLE) && floor.is_some() && closed();
            let (floor, at) = floor.unwrap_or((0, started));
            let got = service.pages.get(&key).await;
            soak.calls.fetch_add(1, Relaxed);
            let Some(got) = got else { continue };
            soak.cached.fetch_add(1, Relaxed);
            if settled {
                soak.checked("older than another client's settled write");
            }
            match version(&got, &key) {
                None => soak.wrong("a shared value for another key", format!("{key}: read {:?}", String::from_utf8_lossy(&got))),
                Some(v)
                    if v < floor
                        && settled
                        && soak.settled(SETTLE)
                        && closed()
                        && stale() == stale_before =>
                {
                    soak.wrong("older than another client's settled write", format!(
                    "{key}: read v{v}, {:.1} s after another client's write of v{floor} was confirmed",
                    started.duration_since(at).as_secs_f64()
                ))
                }
                Some(_) => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What the shared-key tasks need.
struct SharedParts {
    pages: Cache,
    writer: Cache,
    confirmed: Arc<Vec<Mutex<Confirmed>>>,
}

/// Starts every client; they run until `stop`.
pub(crate) fn clients(
    soak: &Arc<Soak>,
    service: &Service,
    stop: &Arc<AtomicBool>,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    for c in 0..6u64 {
        tasks.push(tokio::spawn(browse(
            soak.clone(),
            service.addr,
            0x9E37_79B9 + c,
            stop.clone(),
        )));
    }
    for c in 0..3u64 {
        tasks.push(tokio::spawn(own_keys(
            soak.clone(),
            service.pages.clone(),
            format!("own:{c}"),
            false,
            0x1234_5677 + c,
            stop.clone(),
        )));
    }
    for c in 0..2u64 {
        tasks.push(tokio::spawn(own_keys(
            soak.clone(),
            service.shards.clone(),
            format!("shard:{c}"),
            true,
            0x7654_3211 + c,
            stop.clone(),
        )));
    }
    let shared = Arc::new(SharedParts {
        pages: service.pages.clone(),
        writer: service.writer.clone(),
        confirmed: service.confirmed.clone(),
    });
    tasks.push(tokio::spawn(write_shared(
        soak.clone(),
        shared.clone(),
        stop.clone(),
    )));
    tasks.push(tokio::spawn(read_shared(
        soak.clone(),
        shared,
        stop.clone(),
    )));
    tasks
}
