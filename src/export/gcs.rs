//! Objects written to Cloud Storage through the JSON API's resumable upload
//! (<https://cloud.google.com/storage/docs/performing-resumable-uploads>).
//!
//! Why not `object_store`'s own GCS writer: it uploads through the XML API
//! (`PUT /bucket/object`, XML multipart), which fake-gcs-server, the
//! emulator users test against, does not implement
//! (fsouza/fake-gcs-server#331). The resumable upload is one protocol that
//! Cloud Storage and the emulator both speak, so the path the tests take is
//! the path production takes. `object_store` still does the hard part: the
//! credentials (Application Default Credentials, the metadata server of
//! Cloud Run and GKE, token refresh).
//!
//! The protocol:
//! - a POST opens a session for one object name;
//! - the object's bytes follow in chunks, PUT in order with
//!   `Content-Range: bytes a-b/*` (every chunk but the last a multiple of
//!   256 KiB: [`PART`] is);
//! - the last PUT gives the total size, and only then does the object
//!   appear, whole, replacing any older one of that name;
//! - an upload given up is DELETEd, and a session never finished expires:
//!   a failed export leaves no object.
//!
//! A request that fails on the way (a 5xx, 408 or 429 answer, a reset
//! connection, a timeout) is tried again for up to [`Bucket::retry`] from
//! its first failure; for a chunk, the session is first asked how much it
//! holds (`Content-Range: bytes */*`) and only the rest is sent again.
//! Against an emulator a failed chunk fails the export instead:
//! fake-gcs-server answers that question by committing what it holds as
//! the object.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail};
use bytes::{Bytes, BytesMut};
use object_store::gcp::GcpCredentialProvider;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The size of one part of a multipart upload (S3 and GCS take 5 MiB to
/// 5 GiB), and the most an object's writer buffers; here, below the sink
/// that uses it, since a resumable session's chunks are parts too.
pub const PART: usize = 8 << 20;

// Every chunk but the last must be a multiple of 256 KiB.
const _: () = assert!(PART.is_multiple_of(256 * 1024));

/// Cloud Storage's own endpoint.
const GOOGLE: &str = "https://storage.googleapis.com";

/// Where the bucket is.
pub enum Endpoint {
    /// Cloud Storage, with these credentials.
    Google(GcpCredentialProvider),
    /// An emulator at this URL, which takes no credentials; a chunk that
    /// failed is not resumed there (fake-gcs-server, asked what it holds,
    /// commits it as the object).
    Emulator(String),
}

/// A bucket, and how to reach it.
pub struct Bucket {
    http: reqwest::Client,
    endpoint: Endpoint,
    name: String,
    /// How long one request is tried again before the export fails.
    retry: Duration,
}

/// 308: the session holds part of the object and waits for the rest.
const RESUME_INCOMPLETE: u16 = 308;

impl Bucket {
    pub fn new(endpoint: Endpoint, name: &str, retry: Duration) -> anyhow::Result<Bucket> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("leafcache/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            // One chunk of PART bytes, on a slow link.
            .timeout(Duration::from_secs(120))
            // A 308 here is the protocol's, never a redirect to follow.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Bucket {
            http,
            endpoint,
            name: name.to_owned(),
            retry,
        })
    }

    /// A new upload of the object `object`; no request is made until the
    /// first chunk is full or the upload finishes.
    pub fn upload(self: &Arc<Self>, object: &str) -> Upload {
        Upload {
            bucket: self.clone(),
            object: object.to_owned(),
            session: None,
            buf: BytesMut::new(),
            sent: 0,
            in_flight: None,
        }
    }

    async fn request(&self, method: Method, url: &str) -> anyhow::Result<RequestBuilder> {
        let mut req = self.http.request(method, url);
        if let Endpoint::Google(credentials) = &self.endpoint {
            let token = credentials
                .get_credential()
                .await
                .map_err(|e| anyhow!("no credentials for Cloud Storage: {e}"))?;
            if !token.bearer.is_empty() {
                req = req.bearer_auth(&token.bearer);
            }
        }
        Ok(req)
    }

    /// Opens a resumable session for `object`: its URL.
    async fn open(&self, object: &str) -> anyhow::Result<String> {
        let base = match &self.endpoint {
            Endpoint::Google(_) => GOOGLE,
            Endpoint::Emulator(url) => url.trim_end_matches('/'),
        };
        let mut url = url::Url::parse(base)?;
        url.path_segments_mut()
            .map_err(|()| anyhow!("{base}: not a base URL"))?
            .extend(["upload", "storage", "v1", "b", &self.name, "o"]);
        url.query_pairs_mut()
            .append_pair("uploadType", "resumable")
            .append_pair("name", object);
        let metadata = serde_json::json!({ "name": object }).to_string();
        let mut wait = Backoff::new(self.retry);
        loop {
            let sent = self
                .request(Method::POST, url.as_str())
                .await?
                .header(CONTENT_TYPE, "application/json; charset=UTF-8")
                .body(metadata.clone())
                .send()
                .await;
            let failed = match sent {
                Ok(r) if r.status().is_success() => {
                    return r
                        .headers()
                        .get(LOCATION)
                        .and_then(|l| l.to_str().ok())
                        .map(str::to_owned)
                        .ok_or_else(|| anyhow!("POST {url} answered no session (no Location)"));
                }
                Ok(r) if transient(r.status()) => refused("POST", url.as_str(), r).await,
                Ok(r) => return Err(refused("POST", url.as_str(), r).await),
                Err(e) => unsent("POST", url.as_str(), e),
            };
            wait.or_fail(failed).await?;
        }
    }

    /// Sends `data`, the object's bytes from `offset`, into `session`;
    /// `total` (the object's size) on the last chunk only.
    async fn put(
        &self,
        session: &str,
        offset: u64,
        data: Bytes,
        total: Option<u64>,
    ) -> anyhow::Result<()> {
        let end = offset + data.len() as u64;
        let shown = redacted(session);
        // The session finished the object: right only for the last chunk.
        let finished = || match total {
            Some(_) => Ok(()),
            None => Err(anyhow!("{shown}: the upload ended before its last chunk")),
        };
        // The first byte the session does not hold yet.
        let mut from = offset;
        // Moves `from` to what the session says it holds; whether that is
        // progress.
        let holds = |from: &mut u64, held: u64| -> anyhow::Result<bool> {
            if !(offset..=end).contains(&held) {
                bail!("{shown}: holds {held} bytes after a chunk of {offset}..{end}");
            }
            let moved = held > *from;
            *from = held;
            Ok(moved)
        };
        let mut wait = Backoff::new(self.retry);
        loop {
            if from == end && total.is_none() {
                return Ok(());
            }
            let body = data.slice(usize::try_from(from - offset)?..);
            let sent = self
                .request(Method::PUT, session)
                .await?
                .header(CONTENT_RANGE, content_range(from, end, total))
                // Also when empty (`bytes */total`): HTTP/1.1 wants it.
                .header(CONTENT_LENGTH, body.len())
                .body(body)
                .send()
                .await;
            let failed = match sent {
                Ok(r) if r.status().is_success() => return finished(),
                // Cloud Storage may keep less than was sent: the rest goes
                // again, at once.
                Ok(r) if r.status().as_u16() == RESUME_INCOMPLETE => {
                    if holds(&mut from, held(&r)?)? {
                        continue;
                    }
                    anyhow!("PUT {shown}: the session kept none of the chunk")
                }
                Ok(r) if transient(r.status()) => refused("PUT", shown, r).await,
                Ok(r) => return Err(refused("PUT", shown, r).await),
                Err(e) => unsent("PUT", shown, e),
            };
            if matches!(self.endpoint, Endpoint::Emulator(_)) {
                return Err(failed);
            }
            wait.or_fail(failed).await?;
            match self.status(session).await {
                Ok(Status::Done) => return finished(),
                Ok(Status::Holds(held)) => {
                    if holds(&mut from, held)? {
                        // Progress: a new window of tries.
                        wait = Backoff::new(self.retry);
                    }
                }
                // The chunk goes again from where the session was last
                // known to be, after the next pause.
                Err(e) if e.transient => {}
                Err(e) => return Err(e.error),
            }
        }
    }

    /// How much of the object `session` holds.
    async fn status(&self, session: &str) -> Result<Status, Failure> {
        let sent = self
            .request(Method::PUT, session)
            .await
            .map_err(Failure::permanent)?
            .header(CONTENT_RANGE, "bytes */*")
            .header(CONTENT_LENGTH, 0)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => Ok(Status::Done),
            Ok(r) if r.status().as_u16() == RESUME_INCOMPLETE => {
                held(&r).map(Status::Holds).map_err(Failure::permanent)
            }
            Ok(r) => {
                let transient = transient(r.status());
                let error = refused("PUT", redacted(session), r).await;
                Err(Failure { error, transient })
            }
            Err(e) => Err(Failure {
                error: unsent("PUT", redacted(session), e),
                transient: true,
            }),
        }
    }

    /// Ends `session` without an object. Cloud Storage answers 499.
    async fn cancel(&self, session: &str) -> anyhow::Result<()> {
        let r = self
            .request(Method::DELETE, session)
            .await?
            .header(CONTENT_LENGTH, 0)
            .send()
            .await
            .map_err(|e| unsent("DELETE", redacted(session), e))?;
        match r.status().as_u16() {
            499 | 200..=299 | 404 | 410 => Ok(()),
            _ => Err(refused("DELETE", redacted(session), r).await),
        }
    }
}

enum Status {
    Done,
    /// The session holds the object's first `n` bytes.
    Holds(u64),
}

struct Failure {
    error: anyhow::Error,
    transient: bool,
}

impl Failure {
    fn permanent(error: anyhow::Error) -> Failure {
        Failure {
            error,
            transient: false,
        }
    }
}

/// Answers that a later try may not get.
fn transient(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500..=599)
}

/// The error for an answer that refused a request, with the start of its
/// body (Cloud Storage explains itself there).
async fn refused(method: &str, url: &str, r: Response) -> anyhow::Error {
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    let body: String = body.chars().take(300).collect();
    anyhow!("{method} {url} answered {status}: {body}")
}

/// The error for a request that got no answer, with its causes (reqwest's
/// own message names none: "error sending request").
fn unsent(method: &str, url: &str, e: reqwest::Error) -> anyhow::Error {
    // reqwest's message ends with the URL, a session's upload_id included.
    let e = e.without_url();
    let mut text = format!("{method} {url}: {e}");
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    anyhow!(text)
}

/// A session's URL for messages: without its query, whose `upload_id`
/// lets anyone who has it write the object.
fn redacted(session: &str) -> &str {
    session.split_once('?').map_or(session, |(url, _)| url)
}

/// The bytes a session holds, from a 308's `Range: bytes=0-N` (none: 0).
fn held(r: &Response) -> anyhow::Result<u64> {
    let Some(range) = r.headers().get(RANGE) else {
        return Ok(0);
    };
    parse_range(range.to_str().unwrap_or_default())
        .ok_or_else(|| anyhow!("a resumable session answered Range: {range:?}"))
}

fn parse_range(range: &str) -> Option<u64> {
    let (first, last) = range.strip_prefix("bytes=")?.split_once('-')?;
    if first.trim() != "0" {
        return None;
    }
    last.trim().parse::<u64>().ok()?.checked_add(1)
}

/// `Content-Range` of the bytes `from..end`, of `total` bytes in all (`*`:
/// not known yet).
fn content_range(from: u64, end: u64, total: Option<u64>) -> String {
    let total = total.map_or_else(|| "*".to_owned(), |t| t.to_string());
    if from == end {
        format!("bytes */{total}")
    } else {
        format!("bytes {from}-{}/{total}", end - 1)
    }
}

/// Pauses between tries: 100 ms, doubling to 5 s, until `limit` has passed
/// since the first failure (not since the first try: a request that timed
/// out after minutes is still tried again).
struct Backoff {
    limit: Duration,
    until: Option<Instant>,
    pause: Duration,
}

impl Backoff {
    fn new(limit: Duration) -> Backoff {
        Backoff {
            limit,
            until: None,
            pause: Duration::from_millis(100),
        }
    }

    /// Waits before the next try, or returns `error` if time is up.
    async fn or_fail(&mut self, error: anyhow::Error) -> anyhow::Result<()> {
        let until = *self
            .until
            .get_or_insert_with(|| Instant::now() + self.limit);
        if Instant::now() + self.pause > until {
            return Err(error);
        }
        tracing::warn!(error = %error, pause = ?self.pause, "Cloud Storage: trying again");
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(Duration::from_secs(5));
        Ok(())
    }
}

/// One object on its way: whole chunks of [`PART`] bytes go out while the
/// next fills (one chunk in flight: the protocol is in order), the rest on
/// [`Upload::finish`].
pub struct Upload {
    bucket: Arc<Bucket>,
    object: String,
    /// The session's URL, once opened.
    session: Option<Arc<str>>,
    buf: BytesMut,
    /// Bytes handed to chunks so far.
    sent: u64,
    in_flight: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Upload {
    pub async fn write(&mut self, mut bytes: &[u8]) -> anyhow::Result<()> {
        while !bytes.is_empty() {
            // The buffer fills to PART exactly, never grows past it: one
            // chunk filling and one in flight are all the memory it takes.
            if self.buf.capacity() == 0 {
                self.buf = BytesMut::with_capacity(PART);
            }
            let (now, later) = bytes.split_at(bytes.len().min(PART - self.buf.len()));
            self.buf.extend_from_slice(now);
            bytes = later;
            if self.buf.len() == PART {
                // The next buffer is allocated once this chunk's
                // predecessor is in (`send` waits for it).
                let chunk = std::mem::take(&mut self.buf).freeze();
                self.send(chunk).await?;
            }
        }
        Ok(())
    }

    /// Sends a whole chunk once the one before it is in.
    async fn send(&mut self, chunk: Bytes) -> anyhow::Result<()> {
        self.settle().await?;
        let session = self.session().await?;
        let (bucket, offset) = (self.bucket.clone(), self.sent);
        self.sent += chunk.len() as u64;
        self.in_flight = Some(tokio::spawn(async move {
            bucket.put(&session, offset, chunk, None).await
        }));
        Ok(())
    }

    /// Sends the rest: the object appears now, whole. On failure the
    /// session is cancelled, not left open for a week.
    pub async fn finish(&mut self) -> anyhow::Result<()> {
        let done = self.complete().await;
        if done.is_err() {
            let _ = self.abort().await;
        }
        done
    }

    async fn complete(&mut self) -> anyhow::Result<()> {
        self.settle().await?;
        let session = self.session().await?;
        let rest = std::mem::take(&mut self.buf).freeze();
        let total = self.sent + rest.len() as u64;
        self.bucket
            .put(&session, self.sent, rest, Some(total))
            .await?;
        self.sent = total;
        Ok(())
    }

    /// Gives up: the session is ended, so no object appears.
    pub async fn abort(&mut self) -> anyhow::Result<()> {
        if let Some(task) = self.in_flight.take() {
            task.abort();
        }
        match self.session.take() {
            Some(session) => self.bucket.cancel(&session).await,
            None => Ok(()),
        }
    }

    /// Waits for the chunk in flight.
    async fn settle(&mut self) -> anyhow::Result<()> {
        match self.in_flight.take() {
            Some(task) => task.await?,
            None => Ok(()),
        }
    }

    async fn session(&mut self) -> anyhow::Result<Arc<str>> {
        if let Some(session) = &self.session {
            return Ok(session.clone());
        }
        let session: Arc<str> = self.bucket.open(&self.object).await?.into();
        self.session = Some(session.clone());
        Ok(session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_name_the_bytes_and_the_total_once_known() {
        assert_eq!(content_range(0, 262_144, None), "bytes 0-262143/*");
        assert_eq!(
            content_range(262_144, 263_144, Some(263_144)),
            "bytes 262144-263143/263144"
        );
        // An empty last chunk, and an empty object.
        assert_eq!(content_range(8, 8, Some(8)), "bytes */8");
        assert_eq!(content_range(0, 0, Some(0)), "bytes */0");
    }

    #[test]
    fn a_sessions_range_is_what_it_holds() {
        assert_eq!(parse_range("bytes=0-262143"), Some(262_144));
        assert_eq!(parse_range("bytes=0-0"), Some(1));
        for bad in [
            "bytes=5-9",
            "bytes=0-",
            "0-9",
            "bytes=0-x",
            "bytes=0-18446744073709551615",
        ] {
            assert_eq!(parse_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn messages_never_show_a_sessions_upload_id() {
        let session = "https://storage.googleapis.com/upload/storage/v1/b/x/o\
                       ?uploadType=resumable&name=a&upload_id=SECRET";
        assert_eq!(
            redacted(session),
            "https://storage.googleapis.com/upload/storage/v1/b/x/o"
        );
        assert_eq!(redacted("http://h/o"), "http://h/o");
    }

    #[test]
    fn only_answers_that_may_pass_are_tried_again() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(transient(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [400, 401, 403, 404, 410, 412] {
            assert!(!transient(StatusCode::from_u16(s).unwrap()), "{s}");
        }
    }
}
