//! The proxy a test talks to, and the proxy.toml a test writes for it.
//!
//! [`Proxy::start`] runs the real server in the test's own process, through
//! the library's entry point (`leafcache::app::run` on listeners bound to
//! port 0): no process to spawn, no port to probe. [`Proxy::start_process`]
//! runs the `leafcache serve` binary instead, for tests that read what the
//! process logs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use serde_json::Value;

use super::{Backend, POLL_EVERY, Redis, Req, WAIT, free_port};

/// One `[[route]]` table: key → TOML value literal, written in insertion order.
#[derive(Clone)]
pub struct Route {
    fields: Vec<(String, String)>,
}

impl Route {
    pub fn new(name: &str) -> Route {
        Route {
            fields: vec![("name".into(), format!("{name:?}"))],
        }
    }

    /// The search route of docs/contract.md section 2, in user scope.
    pub fn search() -> Route {
        Route::new("search")
            .set("methods", r#"["GET", "POST"]"#)
            .set("path", r#""/api/v1/search""#)
            .set("query", r#"["json:/query", "query:q"]"#)
            .set("scope", r#""user""#)
            .set("key_ignore", r#"["json:/session_id", "json:/request_id"]"#)
            .set("vary_headers", r#"["accept-encoding"]"#)
            .set(
                "bypass_query",
                r#"['(?i)\b(add|remove|cart|checkout|order)\b']"#,
            )
            .set(
                "bypass_intents",
                r#"["add_to_order", "remove_from_order", "update_order", "confirm_order", "list_order"]"#,
            )
    }

    /// Sets (or replaces) one key; `value` is a TOML literal (`"\"1h\""`, `"[200]"`).
    pub fn set(mut self, key: &str, value: &str) -> Route {
        self.fields.retain(|(k, _)| k != key);
        self.fields.push((key.into(), value.into()));
        self
    }

    pub fn scope(self, scope: &str) -> Route {
        self.set("scope", &format!("{scope:?}"))
    }

    fn render(&self) -> String {
        let mut out = String::from("[[route]]\n");
        for (k, v) in &self.fields {
            out.push_str(&format!("{k} = {v}\n"));
        }
        out
    }
}

/// A proxy.toml under construction. Sections hold raw TOML lines; listen
/// addresses, upstream, redis and spool are filled in by [`Proxy::start`].
#[derive(Clone, Default)]
pub struct ProxyConfig {
    sections: BTreeMap<&'static str, Vec<String>>,
    routes: Vec<Route>,
}

impl ProxyConfig {
    pub fn new() -> ProxyConfig {
        ProxyConfig::default()
    }

    /// A config with the search route only.
    pub fn search() -> ProxyConfig {
        ProxyConfig::new().route(Route::search())
    }

    pub fn route(mut self, route: Route) -> ProxyConfig {
        self.routes.push(route);
        self
    }

    fn line(mut self, section: &'static str, line: &str) -> ProxyConfig {
        self.sections.entry(section).or_default().push(line.into());
        self
    }

    /// A top-level key, e.g. `trust_forwarded = true`.
    pub fn top(self, line: &str) -> ProxyConfig {
        self.line("", line)
    }

    pub fn upstream(self, line: &str) -> ProxyConfig {
        self.line("upstream", line)
    }

    pub fn redis(self, line: &str) -> ProxyConfig {
        self.line("redis", line)
    }

    pub fn cache(self, line: &str) -> ProxyConfig {
        self.line("cache", line)
    }

    pub fn identity(self, line: &str) -> ProxyConfig {
        self.line("identity", line)
    }

    /// `[cache] l1_max_bytes = "0"`: every hit must come from Redis.
    pub fn without_l1(self) -> ProxyConfig {
        self.cache(r#"l1_max_bytes = "0""#)
    }

    fn render(
        &self,
        listen: SocketAddr,
        admin: SocketAddr,
        upstream: &str,
        redis: &str,
        spool: &std::path::Path,
    ) -> String {
        let section = |name: &str| {
            self.sections
                .get(name)
                .cloned()
                .unwrap_or_default()
                .join("\n")
        };
        let mut out = format!("listen = \"{listen}\"\nadmin_listen = \"{admin}\"\n");
        out.push_str(&section(""));
        out.push_str(&format!("\n\n[upstream]\nurl = {upstream:?}\n"));
        out.push_str(&section("upstream"));
        out.push_str(&format!("\n\n[redis]\nurl = {redis:?}\n"));
        out.push_str(&section("redis"));
        out.push_str("\n\n[cache]\n");
        out.push_str(&section("cache"));
        out.push_str("\n\n[identity]\n");
        out.push_str(&section("identity"));
        out.push_str(&format!(
            // Counters written soon after the searches they count, as tests
            // read them (the default sums them for 10 s).
            "\n\n[events]\nspool_dir = {:?}\ncounter_flush = \"100ms\"\n\n",
            spool.display().to_string()
        ));
        for route in &self.routes {
            out.push_str(&route.render());
            out.push('\n');
        }
        out
    }
}

/// A running proxy: in process, or the real `leafcache serve` killed on drop.
/// When the test panics, the proxy's config (and a process's log) are
/// printed so the failure can be read without a rerun.
pub struct Proxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    runner: Runner,
    dir: tempfile::TempDir,
}

enum Runner {
    Process(Child),
    /// Resolving the sender's receiver starts the server's drain.
    InProcess(Option<oneshot::Sender<()>>),
}

impl Proxy {
    /// The proxy in this process, in front of `backend`, with `redis`.
    pub async fn start(config: &ProxyConfig, backend: &Backend, redis: &Redis) -> Proxy {
        Proxy::start_with(config, &backend.url(), &redis.url()).await
    }

    /// The proxy in this process against any upstream URL (e.g. a closed
    /// port).
    pub async fn start_with(config: &ProxyConfig, upstream: &str, redis: &str) -> Proxy {
        let dir = tempfile::tempdir().expect("create the proxy's temp dir");
        let data = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the data listener");
        let admin = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the admin listener");
        let addr = data.local_addr().expect("a bound address");
        let admin_addr = admin.local_addr().expect("a bound address");
        let config_path = dir.path().join("proxy.toml");
        let toml = config.render(addr, admin_addr, upstream, redis, &dir.path().join("spool"));
        std::fs::write(&config_path, toml).expect("write proxy.toml");
        let loaded = leafcache::config::Config::load(&config_path)
            .and_then(|c| c.validate_listeners().map(|()| c))
            .unwrap_or_else(|e| panic!("the test's proxy.toml is invalid: {e}"));
        data.set_nonblocking(true).expect("a non-blocking listener");
        let listeners = leafcache::app::Listeners {
            data: tokio::net::TcpListener::from_std(data).expect("a tokio listener"),
            admin,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async {
            let _ = stopped.await;
        };
        let server = tokio::spawn(leafcache::app::run(Arc::new(loaded), listeners, shutdown));
        let mut proxy = Proxy {
            addr,
            admin: admin_addr,
            runner: Runner::InProcess(Some(stop)),
            dir,
        };
        if proxy.wait_healthy().await.is_err() {
            if server.is_finished() {
                panic!(
                    "leafcache stopped before it was healthy: {:?}",
                    server.await
                );
            }
            panic!("leafcache not healthy after {WAIT:?}");
        }
        proxy
    }

    /// The `leafcache serve` binary, for tests that read its log.
    pub async fn start_process(config: &ProxyConfig, backend: &Backend, redis: &Redis) -> Proxy {
        Proxy::start_process_with(config, &backend.url(), &redis.url()).await
    }

    /// The binary against any upstream URL.
    pub async fn start_process_with(config: &ProxyConfig, upstream: &str, redis: &str) -> Proxy {
        // A port found free can still be taken before the proxy binds it (by
        // another program): then start again on new ports, a few times.
        for _ in 0..3 {
            let mut proxy = Proxy::spawn(config, upstream, redis);
            match proxy.wait_healthy().await {
                Ok(()) => return proxy,
                Err(Some(_)) if proxy.log().to_ascii_lowercase().contains("in use") => continue,
                // Drop prints the config and the log.
                Err(Some(status)) => panic!("leafcache exited before it was healthy ({status})"),
                Err(None) => panic!("leafcache not healthy after {WAIT:?}"),
            }
        }
        panic!("leafcache could not bind its ports in three attempts");
    }

    fn spawn(config: &ProxyConfig, upstream: &str, redis: &str) -> Proxy {
        let dir = tempfile::tempdir().expect("create the proxy's temp dir");
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let config_path = dir.path().join("proxy.toml");
        let toml = config.render(addr, admin, upstream, redis, &dir.path().join("spool"));
        std::fs::write(&config_path, toml).expect("write proxy.toml");
        let log = std::fs::File::create(dir.path().join("proxy.log")).expect("create proxy.log");
        let child = Command::new(super::leafcache_bin())
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            // The environment overrides the file (docs/contract.md section 1): keep it out.
            .env_remove("REDIS_URL")
            .env_remove("LEAFCACHE_UPSTREAM")
            .env_remove("LEAFCACHE_LISTEN")
            .env_remove("LEAFCACHE_ADMIN_TOKEN")
            .env_remove("PORT")
            .env(
                "RUST_LOG",
                std::env::var("PROXY_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("start the leafcache binary");
        Proxy {
            addr,
            admin,
            runner: Runner::Process(child),
            dir,
        }
    }

    /// Ok once `/healthz` answers 200; Err(Some(status)) when the process
    /// exited first, Err(None) when [`WAIT`] passed.
    async fn wait_healthy(&mut self) -> Result<(), Option<std::process::ExitStatus>> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Runner::Process(child) = &mut self.runner
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(Some(status));
            }
            let probe = Req::new(self.admin, "GET", "/healthz");
            if let Ok(Ok(resp)) =
                tokio::time::timeout(Duration::from_secs(1), probe.try_send()).await
                && resp.status == 200
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(None);
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// Everything the process wrote to stdout and stderr so far (a proxy
    /// in process writes none: start it with [`Proxy::start_process`]).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("proxy.log")).unwrap_or_default()
    }

    /// The process id of a proxy started with [`Proxy::start_process`].
    pub fn pid(&self) -> Option<u32> {
        match &self.runner {
            Runner::Process(child) => Some(child.id()),
            Runner::InProcess(_) => None,
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("proxy.toml")
    }

    fn diagnostics(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!(
            "----- proxy.toml -----\n{}\n----- proxy.log -----\n{}",
            read("proxy.toml"),
            read("proxy.log")
        )
    }

    pub fn get(&self, path: &str) -> Req {
        Req::new(self.addr, "GET", path)
    }

    pub fn post(&self, path: &str) -> Req {
        Req::new(self.addr, "POST", path)
    }

    pub fn request(&self, method: &str, path: &str) -> Req {
        Req::new(self.addr, method, path)
    }

    /// `POST /api/v1/search` with a JSON body, as user `user` (if any).
    pub fn search(&self, user: Option<&str>, body: Value) -> Req {
        let req = self.post("/api/v1/search").json(&body);
        match user {
            Some(user) => req.header("x-user-id", user),
            None => req,
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        match &mut self.runner {
            Runner::Process(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Runner::InProcess(stop) => {
                if let Some(stop) = stop.take() {
                    let _ = stop.send(());
                }
            }
        }
        if std::thread::panicking() {
            eprintln!("{}", self.diagnostics());
        }
    }
}
