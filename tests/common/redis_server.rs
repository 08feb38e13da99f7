//! A private `redis-server` per test, with the inspections the tests make.

use std::process::{Child, Command, Stdio};

use super::{eventually, free_port};

/// `redis-server` on loopback, keeping nothing on disk but what a test's
/// `--appendonly` asks for, in `dir`, silent; callers add the ports.
pub fn redis_server(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new("redis-server");
    cmd.args(["--bind", "127.0.0.1", "--save", ""])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// A private `redis-server` on an ephemeral port, killed on drop.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// redis-server arguments beyond the port (auth, TLS), kept for restarts.
    extra: Vec<String>,
    /// The URL's user info: `:password@`, or empty when the server is open.
    auth: String,
    /// Some: the server speaks TLS only, with a certificate from this CA (PEM).
    tls_ca: Option<Vec<u8>>,
}

/// A test CA and a server certificate it signed for 127.0.0.1 (PEM).
pub struct TestTls {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestTls {
    pub fn for_localhost() -> TestTls {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "leafcache test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_pem = ca.self_signed(&ca_key).expect("self-sign the CA").pem();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().expect("server key");
        let mut server = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
        server
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        let cert_pem = server.signed_by(&key, &issuer).expect("sign").pem();
        TestTls {
            ca_pem,
            cert_pem,
            key_pem: key.serialize_pem(),
        }
    }
}

impl Redis {
    pub async fn start() -> Redis {
        Redis::launch(Vec::new(), String::new(), None, |_| ()).await
    }

    /// A server with `requirepass`: every client must AUTH with `password`.
    pub async fn start_with_password(password: &str) -> Redis {
        let extra = vec!["--requirepass".to_owned(), password.to_owned()];
        Redis::launch(extra, format!(":{password}@"), None, |_| ()).await
    }

    /// A server that speaks TLS only (no plain port), with `tls`'s
    /// certificate; clients need not present one.
    pub async fn start_tls(tls: &TestTls) -> Redis {
        let ca = tls.ca_pem.clone().into_bytes();
        let files = |dir: &std::path::Path| {
            for (name, pem) in [
                ("ca.pem", &tls.ca_pem),
                ("server.pem", &tls.cert_pem),
                ("server.key", &tls.key_pem),
            ] {
                std::fs::write(dir.join(name), pem).expect("write a TLS file");
            }
        };
        Redis::launch(Vec::new(), String::new(), Some(ca), files).await
    }

    async fn launch(
        mut extra: Vec<String>,
        auth: String,
        tls_ca: Option<Vec<u8>>,
        prepare: impl FnOnce(&std::path::Path),
    ) -> Redis {
        let dir = tempfile::tempdir().expect("create a temp dir for redis");
        prepare(dir.path());
        if tls_ca.is_some() {
            let file = |name: &str| dir.path().join(name).display().to_string();
            extra.extend([
                "--tls-cert-file".to_owned(),
                file("server.pem"),
                "--tls-key-file".to_owned(),
                file("server.key"),
                "--tls-ca-cert-file".to_owned(),
                file("ca.pem"),
                "--tls-auth-clients".to_owned(),
                "no".to_owned(),
            ]);
        }
        let mut redis = Redis {
            port: free_port(),
            child: None,
            dir,
            extra,
            auth,
            tls_ca,
        };
        redis.spawn().await;
        redis
    }

    async fn spawn(&mut self) {
        let port = self.port.to_string();
        let ports: Vec<&str> = match self.tls_ca {
            Some(_) => vec!["--port", "0", "--tls-port", &port],
            None => vec!["--port", &port],
        };
        let child = redis_server(self.dir.path())
            .args(ports)
            .args(["--appendonly", "no"])
            // Also on a Unix socket, for tests of `unix://` URLs.
            .arg("--unixsocket")
            .arg(self.unix_socket())
            .args(&self.extra)
            .spawn()
            .expect("redis-server is installed and starts");
        let pid = child.id();
        self.child = Some(child);
        let client = self.client();
        // Ready means our own process answers: a PONG from another server that
        // holds the port would make the test inspect the wrong Redis.
        eventually("redis-server to answer PING", || {
            let client = client.clone();
            async move {
                let mut con = client.get_multiplexed_async_connection().await.ok()?;
                let info: String = redis::cmd("INFO")
                    .arg("server")
                    .query_async(&mut con)
                    .await
                    .ok()?;
                info.lines()
                    .any(|line| line.trim() == format!("process_id:{pid}"))
                    .then_some(())
            }
        })
        .await;
    }

    /// A client for inspections: with the password, and over TLS trusting
    /// the test CA when the server speaks TLS.
    pub fn client(&self) -> redis::Client {
        match &self.tls_ca {
            Some(ca) => {
                let _ = rustls::crypto::ring::default_provider().install_default();
                redis::Client::build_with_tls(
                    self.url(),
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(ca.clone()),
                    },
                )
                .expect("a TLS client for the test redis")
            }
            None => redis::Client::open(self.url()).expect("valid redis url"),
        }
    }

    /// The URL the proxy is given: `rediss://` for a TLS server, with the
    /// password when there is one.
    fn unix_socket(&self) -> std::path::PathBuf {
        self.dir.path().join("redis.sock")
    }

    /// The same server through its Unix socket.
    pub fn unix_url(&self) -> String {
        format!("unix://{}", self.unix_socket().display())
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls_ca.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://{}127.0.0.1:{}", self.auth, self.port)
    }

    /// A `[redis]` section for this server, for tests that drive the
    /// library's connections directly (one pooled connection, 2 s timeout).
    pub fn config(&self) -> leafcache::config::RedisConfig {
        leafcache::config::RedisConfig {
            url: self.url(),
            pool_size: 1,
            timeout: std::time::Duration::from_secs(2),
            key_prefix: Default::default(),
            cluster: false,
            tls_ca_file: None,
            tls_ca_pem: None,
        }
    }

    /// Kills the server at once (SIGKILL), as an outage would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        self.client()
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the test redis")
    }

    pub async fn keys(&self, pattern: &str) -> Vec<String> {
        let mut con = self.conn().await;
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut con)
            .await
            .expect("KEYS");
        keys.sort();
        keys
    }

    /// Waits until `n` proxies listen on the invalidation channel.
    pub async fn wait_for_invalidation_subscribers(&self, n: i64) {
        eventually("every proxy subscribed to leafcache:invalidate", || async {
            let mut con = self.conn().await;
            let (_, subscribed): (String, i64) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg("leafcache:invalidate")
                .query_async(&mut con)
                .await
                .ok()?;
            (subscribed >= n).then_some(())
        })
        .await;
    }

    pub async fn exists(&self, key: &str) -> bool {
        let mut con = self.conn().await;
        let n: i64 = redis::cmd("EXISTS")
            .arg(key)
            .query_async(&mut con)
            .await
            .expect("EXISTS");
        n == 1
    }

    /// TTL in seconds (-2: no key, -1: no expiry).
    pub async fn ttl(&self, key: &str) -> i64 {
        self.expiry("TTL", key).await
    }

    /// TTL in milliseconds (-2: no key, -1: no expiry).
    pub async fn pttl(&self, key: &str) -> i64 {
        self.expiry("PTTL", key).await
    }

    async fn expiry(&self, command: &str, key: &str) -> i64 {
        let mut con = self.conn().await;
        redis::cmd(command)
            .arg(key)
            .query_async(&mut con)
            .await
            .unwrap_or_else(|e| panic!("{command} {key}: {e}"))
    }

    pub async fn del(&self, key: &str) {
        let mut con = self.conn().await;
        let _: i64 = redis::cmd("DEL")
            .arg(key)
            .query_async(&mut con)
            .await
            .expect("DEL");
    }

    /// Redis writes happen after the answer: wait (bounded) for the key.
    pub async fn wait_for_key(&self, key: &str) {
        eventually(&format!("redis key {key}"), || async {
            self.exists(key).await.then_some(())
        })
        .await;
    }

    /// Calls of `command` (lowercase) Redis has counted (`INFO commandstats`).
    pub async fn calls(&self, command: &str) -> u64 {
        let field = format!("cmdstat_{command}");
        let stats = info_field(&self.url(), "commandstats", &field).await;
        stats
            .as_deref()
            .and_then(|s| s.strip_prefix("calls=")?.split(',').next()?.parse().ok())
            .unwrap_or(0)
    }

    /// Every cache entry (user or global scope) currently in Redis.
    pub async fn cache_keys(&self) -> Vec<String> {
        let mut keys = self.keys("*cache:*").await;
        keys.retain(|k| k.contains(":cache:") || k.starts_with("cache:global:"));
        keys
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The value of `field` in `INFO <section>` of the Redis at `url`; `None`
/// when Redis does not answer or does not list it.
pub async fn info_field(url: &str, section: &str, field: &str) -> Option<String> {
    let client = redis::Client::open(url).ok()?;
    let mut con = client.get_multiplexed_async_connection().await.ok()?;
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query_async(&mut con)
        .await
        .ok()?;
    info.lines()
        .find_map(|l| Some(l.trim().strip_prefix(field)?.strip_prefix(':')?.to_owned()))
}

pub fn user_key(user: &str, hash: &str) -> String {
    format!("user:{user}:cache:{hash}")
}

pub fn global_key(hash: &str) -> String {
    format!("cache:global:{hash}")
}
