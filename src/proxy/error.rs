//! The data path's one error type, and the one place an error becomes a
//! response (on the model of pingora-error's `ErrorSource` and
//! `fail_to_proxy`).
//!
//! Where a failure came from decides its status: the client's request
//! could not be read (400, 408) or asks what cannot be given (504 for
//! `only-if-cached`); the backend gave no usable answer (502, 504). The data
//! path has no internal errors: whatever cannot be cached is forwarded.

use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};

use super::body::{CollectError, ProxyBody};
use super::forward::UpstreamError;

/// Who a failure is owed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorSource {
    /// The client's request: the proxy answers it, and never counts it
    /// against the backend.
    Client,
    /// The backend: refused, timed out, stalled or misframed.
    Backend,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request body could not be read: it stalled past the upstream
    /// timeout (408) or broke off (400).
    #[error("{0}")]
    ClientBody(CollectError),
    /// `only-if-cached` (RFC 9111 section 5.2.1.7), and nothing stored fits.
    #[error("only-if-cached, and no stored answer fits the request")]
    NotCached,
    /// No answer from the backend (docs/contract.md section 3, step 11).
    #[error("{0}")]
    Backend(#[from] UpstreamError),
    /// A stored answer that must be revalidated, and the backend cannot be
    /// reached (RFC 9111 section 4.2.4).
    #[error("the stored answer must be revalidated and the backend cannot be reached")]
    MustRevalidate,
}

impl ProxyError {
    pub fn source(&self) -> ErrorSource {
        match self {
            ProxyError::ClientBody(_)
            | ProxyError::NotCached
            | ProxyError::Backend(UpstreamError::ClientBody(_)) => ErrorSource::Client,
            ProxyError::Backend(_) | ProxyError::MustRevalidate => ErrorSource::Backend,
        }
    }

    /// The status and the JSON `error` code.
    fn status(&self) -> (StatusCode, &'static str) {
        match self {
            ProxyError::ClientBody(CollectError::Timeout) => {
                (StatusCode::REQUEST_TIMEOUT, "bad_request")
            }
            ProxyError::ClientBody(CollectError::Body(_))
            | ProxyError::Backend(UpstreamError::ClientBody(_)) => {
                (StatusCode::BAD_REQUEST, "bad_request")
            }
            ProxyError::NotCached => (StatusCode::GATEWAY_TIMEOUT, "not_cached"),
            ProxyError::Backend(UpstreamError::Unavailable(_) | UpstreamError::Certificate(_)) => {
                (StatusCode::BAD_GATEWAY, "upstream_unavailable")
            }
            ProxyError::Backend(UpstreamError::Timeout(_) | UpstreamError::Stalled(_)) => {
                (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout")
            }
            ProxyError::MustRevalidate => (StatusCode::GATEWAY_TIMEOUT, "revalidation_failed"),
        }
    }

    /// The JSON error answer of docs/contract.md section 3, step 11.
    pub fn response(&self) -> Response<ProxyBody> {
        let (status, code) = self.status();
        json_error(status, code, &self.to_string())
    }
}

fn json_error(status: StatusCode, code: &str, detail: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({ "error": code, "detail": detail });
    let mut resp = Response::new(ProxyBody::full(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_source_decides_the_status() {
        let cases = [
            (ProxyError::ClientBody(CollectError::Timeout), 408),
            (ProxyError::NotCached, 504),
            (
                ProxyError::from(UpstreamError::Unavailable("refused".into())),
                502,
            ),
            (
                ProxyError::from(UpstreamError::Certificate(
                    "the backend's certificate is signed by an unknown authority".into(),
                )),
                502,
            ),
            (
                ProxyError::from(UpstreamError::Timeout(Duration::from_secs(1))),
                504,
            ),
            (
                ProxyError::from(UpstreamError::Stalled(Duration::from_secs(1))),
                504,
            ),
            (ProxyError::MustRevalidate, 504),
            (
                ProxyError::from(UpstreamError::ClientBody("bad chunk".into())),
                400,
            ),
        ];
        for (e, status) in cases {
            let resp = e.response();
            assert_eq!(resp.status().as_u16(), status, "{e}");
            assert_eq!(resp.headers()[CONTENT_TYPE], "application/json");
        }
        assert_eq!(ProxyError::NotCached.source(), ErrorSource::Client);
        assert_eq!(ProxyError::MustRevalidate.source(), ErrorSource::Backend);
    }
}
