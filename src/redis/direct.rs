//! The event writer's own connection to Redis: one socket (TCP, TLS or
//! Unix), set up like the pool's (the same URL, password or ACL user,
//! database, `tls_ca_file`), that sends a batch of pre-encoded commands as
//! MULTI/EXEC transactions of at most [`TRANSACTION_MAX`] commands and
//! [`TRANSACTION_BYTES`], back to back, and checks the replies without
//! parsing values (see [`super::wire`] for why).
//!
//! It belongs to the writer alone: one batch in flight at a time, so there
//! is nothing to multiplex. Any failure leaves the connection unusable; the
//! writer drops it and connects again for a later batch.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use redis::{ConnectionAddr, IntoConnectionInfo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::RedisConfig;
use super::wire::{self, Commands, Reply, RespBuf};

pub(super) trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// Why a batch was not confirmed. After any of these the outcome of the
/// batch is unknown or negative, and the connection must not be reused.
#[derive(Debug, thiserror::Error)]
pub enum DirectError {
    #[error("cannot connect to redis: {0}")]
    Connect(String),
    #[error("redis i/o: {0}")]
    Io(#[from] std::io::Error),
    /// An error reply. `executed`: Redis ran the transaction and only some
    /// commands failed (a key of the wrong type, say); otherwise nothing ran.
    #[error("redis refused the batch: {message}")]
    Refused { message: String, executed: bool },
    #[error("redis closed the connection")]
    Closed,
    #[error(transparent)]
    Protocol(#[from] wire::ProtocolError),
}

pub struct DirectConn {
    stream: Pin<Box<dyn Stream>>,
    /// Bytes read from Redis; kept across batches for its memory.
    read: Vec<u8>,
    /// Where the first reply not yet consumed starts in `read`. Replies are
    /// consumed by moving this, not by shifting the buffer: a batch has
    /// thousands of them.
    pos: usize,
}

const MULTI: &[u8] = b"*1\r\n$5\r\nMULTI\r\n";
/// The most commands in one transaction. Redis runs a transaction as one
/// step, and cache lookups wait behind it: docs/contract.md section 5 bounds a step to
/// about a millisecond. The log's commands take a few microseconds each
/// (none carries more than `events::write::MEMBERS_MAX` members), so 128
/// of them stay well inside it (`cargo bench --bench event_writer` reads
/// the longest from `SLOWLOG`).
pub const TRANSACTION_MAX: usize = 128;
/// The most bytes of commands in one transaction.
pub const TRANSACTION_BYTES: usize = 64 * 1024;
const EXEC: &[u8] = b"*1\r\n$4\r\nEXEC\r\n";

impl DirectError {
    /// Whether sending the same batch again later can succeed: transport
    /// trouble, or a refusal Redis gives while it is out of memory, loading,
    /// busy, failing over or while our credentials are being changed.
    /// Anything else (a key of the wrong type) would fail the same way every
    /// time.
    pub fn is_transient(&self) -> bool {
        match self {
            DirectError::Refused { message, .. } => [
                "OOM",
                "LOADING",
                "BUSY",
                "MASTERDOWN",
                "TRYAGAIN",
                "READONLY",
                "CLUSTERDOWN",
                "NOAUTH",
                "NOPERM",
            ]
            .iter()
            .any(|code| message.starts_with(code)),
            _ => true,
        }
    }
}

impl DirectConn {
    /// Connects, authenticates and selects the database of `cfg.url`.
    pub async fn connect(cfg: &RedisConfig, timeout: Duration) -> Result<DirectConn, DirectError> {
        tokio::time::timeout(timeout, Self::connect_inner(cfg))
            .await
            .unwrap_or_else(|_| Err(DirectError::Connect("timed out".into())))
    }

    async fn connect_inner(cfg: &RedisConfig) -> Result<DirectConn, DirectError> {
        let info = cfg
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| DirectError::Connect(e.to_string()))?;
        let stream: Pin<Box<dyn Stream>> = match info.addr() {
            ConnectionAddr::Tcp(host, port) => {
                let s = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                s.set_nodelay(true)?;
                Box::pin(s)
            }
            ConnectionAddr::TcpTls { host, port, .. } => {
                let s = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                s.set_nodelay(true)?;
                let connector = tokio_rustls::TlsConnector::from(tls_config(cfg)?);
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| DirectError::Connect(format!("{host}: {e}")))?;
                Box::pin(connector.connect(name, s).await?)
            }
            #[cfg(unix)]
            ConnectionAddr::Unix(path) => Box::pin(tokio::net::UnixStream::connect(path).await?),
            #[allow(unreachable_patterns)]
            other => {
                return Err(DirectError::Connect(format!(
                    "unsupported address {other:?}"
                )));
            }
        };
        let mut conn = DirectConn {
            stream,
            read: Vec::with_capacity(16 * 1024),
            pos: 0,
        };
        let settings = info.redis_settings();
        let mut setup = RespBuf::default();
        if let Some(password) = settings.password() {
            match settings.username() {
                Some(user) => setup.command(&[b"AUTH", user.as_bytes(), password.as_bytes()]),
                None => setup.command(&[b"AUTH", password.as_bytes()]),
            }
        }
        if settings.db() != 0 {
            let mut n = itoa::Buffer::new();
            setup.command(&[b"SELECT", n.format(settings.db()).as_bytes()]);
        }
        if !setup.is_empty() {
            conn.stream.write_all(setup.as_bytes()).await?;
            for _ in 0..setup.commands() {
                if let Reply::Error(e) = conn.next_reply().await? {
                    return Err(DirectError::Connect(e));
                }
            }
        }
        Ok(conn)
    }

    /// The connected socket, for a connection that speaks for itself
    /// ([`super::mux`]).
    pub(super) fn into_stream(self) -> Pin<Box<dyn Stream>> {
        self.stream
    }

    /// Runs `batch` as transactions of at most [`TRANSACTION_MAX`]
    /// commands and [`TRANSACTION_BYTES`], all written at once. `Ok` only
    /// when Redis executed every command without an error reply.
    ///
    /// Redis runs one transaction at a time and serves other clients
    /// between them: cut this small, a batch of the log holds cache lookups
    /// up for a fraction of a millisecond at a time rather than for all of
    /// it. A failure in one transaction leaves those before it executed;
    /// the caller sends the whole batch again (at least once).
    pub async fn exec(&mut self, batch: &RespBuf) -> Result<(), DirectError> {
        if batch.is_empty() {
            return Ok(());
        }
        for (commands, _) in batch.parts(TRANSACTION_MAX, TRANSACTION_BYTES) {
            self.stream.write_all(MULTI).await?;
            self.stream.write_all(commands).await?;
            self.stream.write_all(EXEC).await?;
        }
        self.stream.flush().await?;
        let mut result = Ok(());
        for (_, n) in batch.parts(TRANSACTION_MAX, TRANSACTION_BYTES) {
            match self.read_transaction(n).await {
                Ok(()) => {}
                // A refusal: the replies of the other transactions still
                // come, and are read so the connection stays usable.
                Err(e @ DirectError::Refused { .. }) => {
                    if result.is_ok() {
                        result = Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        result
    }

    /// Reads the replies of one transaction of `n` commands.
    async fn read_transaction(&mut self, n_commands: usize) -> Result<(), DirectError> {
        let mut refused = None;
        // MULTI's +OK, then a +QUEUED per command (or an error for a command
        // Redis would not queue, which makes EXEC abort).
        for _ in 0..=n_commands {
            if let Reply::Error(e) = self.next_reply().await? {
                refused.get_or_insert(e);
            }
        }
        // EXEC's array is read an element at a time: it holds a reply per
        // command, and is usually longer than one read.
        if let Some(n) = self.next_array_header().await? {
            let mut failed = None;
            for _ in 0..n {
                match self.next_reply().await? {
                    Reply::Error(e) | Reply::Array(_, Some(e)) => {
                        failed.get_or_insert(e);
                    }
                    _ => {}
                }
            }
            return match (failed, refused) {
                (None, None) if n == n_commands => Ok(()),
                (Some(message), _) | (None, Some(message)) => Err(DirectError::Refused {
                    message,
                    executed: true,
                }),
                (None, None) => Err(DirectError::Protocol(wire::ProtocolError(format!(
                    "EXEC answered {n} replies for {n_commands} commands"
                )))),
            };
        }
        match self.next_reply().await? {
            Reply::Array(_, Some(message)) => Err(DirectError::Refused {
                message,
                executed: true,
            }),
            // EXECABORT: the reason is the error a command got when queued.
            Reply::Error(e) => Err(DirectError::Refused {
                message: refused.unwrap_or(e),
                executed: false,
            }),
            other => Err(DirectError::Protocol(wire::ProtocolError(format!(
                "unexpected EXEC reply {other:?}"
            )))),
        }
    }

    /// The next whole reply, reading as much as it takes.
    async fn next_reply(&mut self) -> Result<Reply, DirectError> {
        loop {
            if let Some((reply, used)) = wire::read_reply(&self.read[self.pos..])? {
                self.pos += used;
                return Ok(reply);
            }
            self.read_more().await?;
        }
    }

    /// The element count when the next reply is an array (consuming only
    /// its header), else `None` (consuming nothing).
    async fn next_array_header(&mut self) -> Result<Option<usize>, DirectError> {
        loop {
            if let Some((n, used)) = wire::read_array_header(&self.read[self.pos..])? {
                self.pos += used;
                return Ok(n);
            }
            self.read_more().await?;
        }
    }

    /// Reads more bytes, first dropping the consumed ones (what is left is
    /// at most one partial reply, so the shift is short).
    async fn read_more(&mut self) -> Result<(), DirectError> {
        self.read.drain(..self.pos);
        self.pos = 0;
        if self.read.capacity() - self.read.len() < 4096 {
            self.read.reserve(16 * 1024);
        }
        if self.stream.read_buf(&mut self.read).await? == 0 {
            return Err(DirectError::Closed);
        }
        Ok(())
    }
}

/// The rustls configuration of a `rediss://` URL: only `tls_ca_file`'s
/// roots when it is set, else the platform's, as the pool does.
fn tls_config(cfg: &RedisConfig) -> Result<Arc<rustls::ClientConfig>, DirectError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    match &cfg.tls_ca_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| DirectError::Connect(format!("tls_ca_file: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| DirectError::Connect(format!("tls_ca_file: {e}")))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
        }
    }
    Ok(Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}
