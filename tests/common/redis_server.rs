//! A private `redis-server` per test, with the inspections the tests make.

use std::process::{Child, Command, Stdio};

use super::{eventually, free_port};

/// A private `redis-server` on an ephemeral port, killed on drop.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Redis {
    pub async fn start() -> Redis {
        let mut redis = Redis {
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().expect("create a temp dir for redis"),
        };
        redis.spawn().await;
        redis
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed and starts");
        let pid = child.id();
        self.child = Some(child);
        let url = self.url();
        // Ready means our own process answers: a PONG from another server that
        // holds the port would make the test inspect the wrong Redis.
        eventually("redis-server to answer PING", || {
            let url = url.clone();
            async move {
                let client = redis::Client::open(url).ok()?;
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

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
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
        redis::Client::open(self.url())
            .expect("valid redis url")
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
        let mut con = self.conn().await;
        redis::cmd("TTL")
            .arg(key)
            .query_async(&mut con)
            .await
            .expect("TTL")
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

pub fn user_key(user: &str, hash: &str) -> String {
    format!("user:{user}:cache:{hash}")
}

pub fn global_key(hash: &str) -> String {
    format!("cache:global:{hash}")
}
