//! The response body of a guarded service: the inner service's, or the
//! short text of a refusal.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

pin_project_lite::pin_project! {
    /// Body of a [`GuardService`](super::GuardService) response: either the
    /// inner service's body, untouched, or the few bytes of a refusal.
    pub struct GuardBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project_lite::pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Refusal { data: Option<Bytes> },
    }
}

impl<B> GuardBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        GuardBody {
            kind: Kind::Inner { body },
        }
    }

    pub(crate) fn refusal(text: &'static str) -> Self {
        let data = (!text.is_empty()).then(|| Bytes::from_static(text.as_bytes()));
        GuardBody {
            kind: Kind::Refusal { data },
        }
    }
}

impl<B: Body<Data = Bytes>> Body for GuardBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Refusal { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Refusal { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Refusal { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
