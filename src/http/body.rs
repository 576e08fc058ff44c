//! The body of a response through the HTTP and gRPC layers.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::BoxError;

pin_project! {
    /// The body of an `HttpCache` response: a cached or buffered body, or
    /// the handler's own, streamed through.
    pub struct CachedBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Full { data: Option<Bytes>, trailers: Option<HeaderMap> },
        Inner { #[pin] body: B },
        Failed { error: Option<BoxError> },
    }
}

impl<B> CachedBody<B> {
    pub(super) fn full(data: Bytes) -> Self {
        Self::with_trailers(data, None)
    }

    pub(super) fn with_trailers(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        let data = (!data.is_empty()).then_some(data);
        CachedBody {
            kind: Kind::Full { data, trailers },
        }
    }

    pub(super) fn inner(body: B) -> Self {
        CachedBody {
            kind: Kind::Inner { body },
        }
    }

    pub(super) fn failed(error: BoxError) -> Self {
        CachedBody {
            kind: Kind::Failed { error: Some(error) },
        }
    }
}

impl<B> fmt::Debug for CachedBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CachedBody")
    }
}

impl<B> Body for CachedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Full { data, trailers } => Poll::Ready(match data.take() {
                Some(d) => Some(Ok(Frame::data(d))),
                None => trailers.take().map(|t| Ok(Frame::trailers(t))),
            }),
            KindProj::Inner { body } => body.poll_frame(cx).map_err(Into::into),
            KindProj::Failed { error } => Poll::Ready(error.take().map(Err)),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full { data, trailers } => data.is_none() && trailers.is_none(),
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Failed { error } => error.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Inner { body } => body.size_hint(),
            Kind::Failed { .. } => SizeHint::default(),
        }
    }
}
