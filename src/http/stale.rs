//! RFC 5861 for the response cache: an entry past its freshness is served
//! stale while `stale-while-revalidate` allows (and revalidated in the
//! background, once per key at a time), or only when the handler fails
//! while `stale-if-error` allows.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};

use http_body::Body;
use tower::{BoxError, Service};

use super::directives::now_ms;
use super::policy::buffer_if_cacheable;
use super::serve::policy_request;
use super::{mark, CachedBody, Config, Entry};
use crate::cache::{Backend, Cache};

/// Sends `req` to `inner` in the background and stores what it answers
/// (if it may be stored) where it belongs among the variants of the URL
/// whose key is `base`, unless a revalidation of `at` (the key the stale
/// copy was read from) is
/// under way, or the cache is failing (its breaker open: the new copy could
/// not be stored, and every request would render again). The caller has
/// been answered with the stale copy already. A revalidation is abandoned
/// after the layer's `revalidation_timeout`; none waits on it meanwhile
/// (its flight is apart from the misses' own).
pub(super) fn revalidate<S, C, ReqBody, ResBody>(
    mut inner: S,
    cache: Cache<C>,
    config: Arc<Config>,
    req: Request<ReqBody>,
    (at, base): (Vec<u8>, Vec<u8>),
) where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
    C: Backend + Sync,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    use crate::breaker::State;
    if matches!(
        cache.breaker().state(),
        State::Open | State::HalfOpen | State::ForcedOpen
    ) {
        return;
    }
    if config.revalidation_timeout.is_zero() {
        return;
    }
    let policy = policy_request(&req);
    runtime.spawn(async move {
        let refresh = cache.try_refresh_apart(&at, || async {
            let requested = now_ms();
            let res = inner.call(req).await.map_err(drop)?;
            let (res, share) = buffer_if_cacheable(&config, &policy, &base, requested, res).await;
            // A server error does not replace the stale copy: it is served
            // until its windows end, or a better answer comes.
            let share = share.filter(|_| !res.status().is_server_error());
            Ok::<_, ()>(((), share))
        });
        let _ = tokio::time::timeout(config.revalidation_timeout, refresh).await;
    });
}

/// The handler's answer, or — if it failed (an error, or a 5xx) and a
/// `stale-if-error` copy is at hand — that copy, marked `stale`.
pub(super) fn or_stale<B, E>(
    res: Result<Response<CachedBody<B>>, E>,
    stale: Option<Entry>,
    config: &Config,
    head: bool,
) -> Result<Response<CachedBody<B>>, E> {
    let Some(entry) = stale else { return res };
    match &res {
        Ok(r) if !r.status().is_server_error() => res,
        _ => Ok(mark(entry.into_response(head, now_ms()), config, "stale")),
    }
}
