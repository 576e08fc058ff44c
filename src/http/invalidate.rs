//! Invalidation (RFC 9111 §4.4) and purges: a URL's purge marker holds
//! the time of its last invalidation, and an entry of that URL fetched by
//! a request sent no later is not used, whatever its variant. One write
//! removes every variant; the marker lives as long as the longest entry
//! can ([`max_ttl`](crate::cache::CacheBuilder::max_ttl), never jittered).

use http::header::{self, HeaderValue};
use http::{HeaderMap, Request, Response, Uri};
use http_body::Body;
use tower::{BoxError, Service};

use bytes::Bytes;

use super::directives::now_ms;
use super::serve::mark;
use super::{key, CachedBody, Config};
use crate::cache::{Backend, Cache, Write};

/// A request with a method not known to be safe: sent to the handler, and
/// once it answers with a non-error status (2xx, 3xx), the stored
/// responses for its target, and for the `Location` and
/// `Content-Location` it names on the same host, are invalidated before
/// the caller has the answer (so the caller's next `GET` cannot get the
/// old page).
pub(super) async fn after_unsafe<S, C, ReqBody, ResBody>(
    mut inner: S,
    cache: &Cache<C>,
    config: &Config,
    req: Request<ReqBody>,
) -> Result<Response<CachedBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes>,
    ResBody::Error: Into<BoxError>,
    C: Backend,
{
    let hosts = hosts(req.uri(), req.headers());
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let res = inner.call(req).await?;
    let status = res.status();
    if status.is_success() || status.is_redirection() {
        let mut targets = vec![(path.clone(), query)];
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            let named = res.headers().get_all(name).iter();
            targets.extend(named.filter_map(|v| same_host(v, &hosts, &path)));
        }
        for host in &hosts {
            for (path, query) in &targets {
                purge(cache, host, path, query.as_deref(), "unsafe_method").await;
            }
        }
    }
    Ok(mark(res.map(CachedBody::inner), config, "bypass"))
}

/// Sets the purge marker of one URL to now: counted, by `trigger`, and
/// logged when it could not be written. This process holds the purge
/// itself too (the cache's `LocalPurges`): for good when Redis did not
/// take it (other processes may still serve the old entries from Redis
/// until they expire), and until it can be read back when it did.
pub(super) async fn purge<C: Backend>(
    cache: &Cache<C>,
    host: &str,
    path: &str,
    query: Option<&str>,
    trigger: &'static str,
) -> Write {
    let marker = key::purge(host, path, query);
    let at = now_ms();
    let write = cache
        .set_for_max_ttl(&marker, Bytes::from(at.to_string()), false)
        .await;
    crate::telemetry::http_purge(cache.label(), trigger, write.is_done());
    // Held here either way: taken, until it can surely be read back.
    let (held, untaken, taken) = cache.local_purges();
    held.hold(&marker, at, if write.is_done() { taken } else { untaken });
    if !write.is_done() {
        tracing::warn!(
            target: "fusebox::http",
            cache = cache.name(),
            trigger,
            result = ?write,
            "a purge could not be written: this process holds it, others may still serve that URL's stored responses"
        );
    }
    write
}

/// Writes a URL's marker as "never purged" if it has none, so that a near
/// cache holds it like any value (an absent key is not kept in L1, and
/// every lookup would ask Redis).
pub(super) async fn mark_unpurged<C: Backend>(cache: &Cache<C>, marker: &[u8]) {
    if cache.has_near() {
        let _ = cache
            .set_for_max_ttl(marker, Bytes::from_static(b"0"), true)
            .await;
    }
}

/// The hosts a request's entries may be stored under: its host, or both
/// when its URI and `Host` disagree (such a request is not cached, but an
/// unsafe one still invalidates whatever either names).
fn hosts(uri: &Uri, headers: &HeaderMap) -> Vec<String> {
    if let Some(host) = key::authority(uri, headers) {
        return vec![host];
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let named = uri.authority().map(|a| a.as_str()).into_iter().chain(host);
    named.map(str::to_ascii_lowercase).collect()
}

/// The path and query a `Location` or `Content-Location` names, if it is
/// on one of `hosts`: absolute (`https://host/p`), network-path
/// (`//host/p`), absolute-path (`/p`) or relative to `base` (`p`).
fn same_host(
    value: &HeaderValue,
    hosts: &[String],
    base: &str,
) -> Option<(String, Option<String>)> {
    let text = value.to_str().ok()?.trim();
    let text = text.split('#').next()?;
    let absolute = if text.starts_with("//") {
        Some(format!("http:{text}"))
    } else {
        text.contains("://").then(|| text.to_owned())
    };
    if let Some(absolute) = absolute {
        let uri: Uri = absolute.parse().ok()?;
        let host = uri.authority()?.as_str();
        if !hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            return None;
        }
        return Some((uri.path().to_owned(), uri.query().map(str::to_owned)));
    }
    let (path, query) = match text.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (text, None),
    };
    let path = if path.starts_with('/') {
        path.to_owned()
    } else if path.is_empty() {
        base.to_owned()
    } else {
        let dir = base.rfind('/').map_or("/", |i| &base[..=i]);
        format!("{dir}{path}")
    };
    Some((path, query))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_on_the_same_host_resolve_and_others_do_not() {
        let hosts = vec!["example.com".to_owned()];
        let at = |v: &'static str| same_host(&HeaderValue::from_static(v), &hosts, "/a/b");
        let p = |path: &str, q: Option<&str>| Some((path.to_owned(), q.map(str::to_owned)));
        assert_eq!(at("https://Example.com/x?y=1"), p("/x", Some("y=1")));
        assert_eq!(at("//example.com/x"), p("/x", None));
        assert_eq!(at("/x#frag"), p("/x", None));
        assert_eq!(at("c?d"), p("/a/c", Some("d")));
        assert_eq!(at("?d"), p("/a/b", Some("d")));
        assert_eq!(at("https://other.example/x"), None);
        assert_eq!(at("//other.example/x"), None);
    }

    #[test]
    fn hosts_that_disagree_are_both_invalidated() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("B.example"));
        let uri: Uri = "http://a.example/x".parse().unwrap();
        assert_eq!(hosts(&uri, &headers), ["a.example", "b.example"]);
        let uri: Uri = "/x".parse().unwrap();
        assert_eq!(hosts(&uri, &headers), ["b.example"]);
    }

    /// A log written to memory.
    #[derive(Clone, Default)]
    struct Log(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Log {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[derive(Debug)]
    struct Refused;

    impl crate::cache::Fault for Refused {
        fn reason(&self) -> crate::cache::Reason {
            crate::cache::Reason::OutOfMemory
        }
    }

    #[tokio::test]
    async fn only_a_purge_redis_did_not_take_is_logged() {
        use crate::cache::{CacheRequest, CacheResponse};
        use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
        let refuse = std::sync::Arc::new(AtomicBool::new(false));
        let backend = tower::service_fn({
            let refuse = refuse.clone();
            move |_: CacheRequest| {
                std::future::ready(match refuse.load(SeqCst) {
                    true => Err(Refused),
                    false => Ok(CacheResponse::Written(true)),
                })
            }
        });
        let cache = Cache::builder()
            .name("purge-log")
            .backend(backend)
            .build()
            .unwrap();
        let log = Log::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let text = || String::from_utf8(log.0.lock().unwrap().clone()).unwrap();

        assert_eq!(purge(&cache, "h", "/p", None, "purge").await, Write::Done);
        assert!(!text().contains("could not be written"), "{}", text());
        refuse.store(true, SeqCst);
        assert_ne!(purge(&cache, "h", "/p", None, "purge").await, Write::Done);
        assert!(
            text().contains("a purge could not be written"),
            "{}",
            text()
        );
        assert!(text().contains("trigger=\"purge\""), "{}", text());
    }
}
