//! A private Redis Cluster per test: three masters on loopback, joined with
//! `redis-cli --cluster create`, each killable and restartable, with the
//! inspections the cluster tests make.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Stdio};

use redis::cluster_async::ClusterConnection;

use super::{eventually, free_port, redis_server};

/// How long `redis-cli --cluster create` may take before the test gives up.
const CLUSTER_CREATE_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// One master: its client port and its cluster bus port (set explicitly, so
/// that it is free too, rather than port + 10000).
struct Node {
    port: u16,
    bus_port: u16,
    child: Option<Child>,
}

/// Three masters sharing the 16384 slots, no replicas, killed on drop.
pub struct RedisCluster {
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
    /// redis-server arguments beyond ports and cluster settings (ACL).
    extra: Vec<String>,
    /// The URL's user info for the proxy (`user:password@`), or empty.
    auth: String,
    /// The default user's password, for the harness's own connections.
    admin_password: Option<String>,
    /// Some: the nodes speak TLS only (cluster bus included), with a
    /// certificate from this CA (PEM).
    tls_ca: Option<Vec<u8>>,
}

impl RedisCluster {
    pub async fn start() -> RedisCluster {
        let mut cluster = RedisCluster::planned();
        cluster.create().await;
        cluster
    }

    /// Ports and a directory, nothing running yet: for a proxy that starts
    /// before its cluster.
    pub fn planned() -> RedisCluster {
        RedisCluster {
            nodes: (0..3)
                .map(|_| Node {
                    port: free_port(),
                    bus_port: free_port(),
                    child: None,
                })
                .collect(),
            dir: tempfile::tempdir().expect("create a temp dir for the cluster"),
            extra: Vec::new(),
            auth: String::new(),
            admin_password: None,
            tls_ca: None,
        }
    }

    /// A cluster whose nodes speak TLS only, clients and cluster bus, with
    /// `tls`'s certificate; clients need not present one.
    pub async fn start_tls(tls: &super::TestTls) -> RedisCluster {
        let mut cluster = RedisCluster::planned();
        let dir = cluster.dir.path().to_path_buf();
        for (name, pem) in [
            ("ca.pem", &tls.ca_pem),
            ("server.pem", &tls.cert_pem),
            ("server.key", &tls.key_pem),
        ] {
            std::fs::write(dir.join(name), pem).expect("write a TLS file");
        }
        let file = |name: &str| dir.join(name).display().to_string();
        cluster.extra = vec![
            "--tls-cluster".to_owned(),
            "yes".to_owned(),
            "--tls-cert-file".to_owned(),
            file("server.pem"),
            "--tls-key-file".to_owned(),
            file("server.key"),
            "--tls-ca-cert-file".to_owned(),
            file("ca.pem"),
            "--tls-auth-clients".to_owned(),
            "no".to_owned(),
        ];
        cluster.tls_ca = Some(tls.ca_pem.clone().into_bytes());
        cluster.create().await;
        cluster
    }

    /// A cluster whose default user needs `admin_password` and where the
    /// proxy connects as the ACL user `user` with `password`.
    pub async fn start_with_acl_user(
        admin_password: &str,
        user: &str,
        password: &str,
    ) -> RedisCluster {
        let mut cluster = RedisCluster::planned();
        cluster.extra = vec![
            "--requirepass".to_owned(),
            admin_password.to_owned(),
            // One argument per ACL rule: redis-server joins them.
            "--user".to_owned(),
            user.to_owned(),
            "on".to_owned(),
            format!(">{password}"),
            "~*".to_owned(),
            "&*".to_owned(),
            "+@all".to_owned(),
        ];
        cluster.auth = format!("{user}:{password}@");
        cluster.admin_password = Some(admin_password.to_owned());
        cluster.create().await;
        cluster
    }

    /// Starts the nodes, joins them into one cluster and waits until every
    /// node says the cluster is ok.
    pub async fn create(&mut self) {
        let cluster = self;
        for i in 0..cluster.nodes.len() {
            cluster.spawn(i).await;
        }
        let mut create = tokio::process::Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &cluster.nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        if let Some(pw) = &cluster.admin_password {
            create.args(["-a", pw, "--no-auth-warning"]);
        }
        if cluster.tls_ca.is_some() {
            let ca = cluster.dir.path().join("ca.pem");
            create.arg("--tls").arg("--cacert").arg(ca);
        }
        create
            .arg("--cluster-yes")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        // Creating a cluster waits for the nodes to agree (redis-cli polls
        // once a second); with the cluster tests starting 33 servers at once
        // on two cores it has taken over 10 s. The bound only guards a hang.
        let out = tokio::time::timeout(CLUSTER_CREATE_WAIT, create.output())
            .await
            .expect("redis-cli --cluster create finishes")
            .expect("redis-cli is installed");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_ok().await;
    }

    async fn spawn(&mut self, i: usize) {
        let node = &self.nodes[i];
        let conf = self.dir.path().join(format!("nodes-{i}.conf"));
        let port = node.port.to_string();
        let ports: Vec<&str> = match self.tls_ca {
            Some(_) => vec!["--port", "0", "--tls-port", &port],
            None => vec!["--port", &port],
        };
        let child = redis_server(self.dir.path())
            .args(ports)
            .args(["--cluster-port", &node.bus_port.to_string()])
            .args(["--cluster-enabled", "yes"])
            .arg("--cluster-config-file")
            .arg(&conf)
            .args(["--cluster-require-full-coverage", "no"])
            .args(["--cluster-node-timeout", "2000"])
            .args(["--appendonly", "no"])
            .args(&self.extra)
            .spawn()
            .expect("redis-server is installed and starts");
        let pid = child.id();
        let client = self.client(&self.admin_url(node.port));
        self.nodes[i].child = Some(child);
        // Ready means our own process answers on the port.
        eventually("a cluster node to answer as itself", || {
            let client = client.clone();
            async move {
                let info = info(&client, "server").await?;
                info.lines()
                    .any(|l| l.trim() == format!("process_id:{pid}"))
                    .then_some(())
            }
        })
        .await;
    }

    /// Polls until every running node says `cluster_state:ok` and sees every
    /// slot assigned.
    async fn wait_ok(&self) {
        let clients: Vec<redis::Client> = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| self.client(&self.admin_url(n.port)))
            .collect();
        eventually("cluster_state:ok on every node", || {
            let clients = clients.clone();
            async move {
                for client in &clients {
                    let text = cluster_info(client).await?;
                    let ok = text.lines().any(|l| l.trim() == "cluster_state:ok")
                        && text
                            .lines()
                            .any(|l| l.trim() == "cluster_slots_assigned:16384");
                    if !ok {
                        return None;
                    }
                }
                Some(())
            }
        })
        .await;
    }

    /// The URL the proxy is given: the first node (any one would do).
    pub fn url(&self) -> String {
        format!(
            "{}://{}127.0.0.1:{}",
            self.scheme(),
            self.auth,
            self.nodes[0].port
        )
    }

    fn scheme(&self) -> &'static str {
        if self.tls_ca.is_some() {
            "rediss"
        } else {
            "redis"
        }
    }

    /// A client for one node: with the password, over TLS trusting the test
    /// CA when the cluster speaks TLS.
    pub fn client(&self, url: &str) -> redis::Client {
        match &self.tls_ca {
            Some(ca) => {
                let _ = rustls::crypto::ring::default_provider().install_default();
                redis::Client::build_with_tls(
                    url,
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(ca.clone()),
                    },
                )
                .expect("a TLS client for a test cluster node")
            }
            None => redis::Client::open(url).expect("valid node url"),
        }
    }

    /// Each node's URL, for the harness's own connections.
    pub fn node_urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| self.admin_url(n.port)).collect()
    }

    fn admin_url(&self, port: u16) -> String {
        let scheme = self.scheme();
        match &self.admin_password {
            Some(pw) => format!("{scheme}://:{pw}@127.0.0.1:{port}"),
            None => format!("{scheme}://127.0.0.1:{port}"),
        }
    }

    /// Kills master `i` at once (SIGKILL), as an outage would.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts master `i` again on its ports with its cluster config (so it
    /// serves its slots again), empty, and waits for the cluster to be ok.
    pub async fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i).await;
        self.wait_ok().await;
    }

    /// A cluster connection for inspections (follows MOVED).
    pub async fn conn(&self) -> ClusterConnection {
        let mut builder = redis::cluster::ClusterClientBuilder::new(self.node_urls());
        if let Some(ca) = &self.tls_ca {
            builder = builder.certs(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.clone()),
            });
        }
        builder
            .build()
            .expect("valid node urls")
            .get_async_connection()
            .await
            .expect("connect to the test cluster")
    }

    /// The index of the master that serves `key`.
    pub async fn master_of(&self, key: &str) -> usize {
        let mut con = node_conn(&self.client(&self.admin_url(self.nodes[0].port))).await;
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut con)
            .await
            .expect("CLUSTER KEYSLOT");
        let ranges: Vec<(i64, i64, (String, i64))> = slots(&mut con).await;
        let port = ranges
            .iter()
            .find(|(start, end, _)| (*start..=*end).contains(&slot))
            .map(|(_, _, (_, port))| *port)
            .expect("every slot is served");
        self.nodes
            .iter()
            .position(|n| i64::from(n.port) == port)
            .expect("the slot's master is one of ours")
    }

    /// Every key on every running master, with the master that holds it.
    pub async fn keys(&self, pattern: &str) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if node.child.is_none() {
                continue;
            }
            let mut con = node_conn(&self.client(&self.admin_url(node.port))).await;
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(pattern)
                .query_async(&mut con)
                .await
                .expect("KEYS");
            out.extend(keys.into_iter().map(|k| (k, i)));
        }
        out
    }

    /// The masters that hold at least one key matching `pattern`.
    pub async fn masters_holding(&self, pattern: &str) -> BTreeSet<usize> {
        self.keys(pattern).await.into_values().collect()
    }

    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        let mut con = self.conn().await;
        cmd.query_async(&mut con)
            .await
            .unwrap_or_else(|e| panic!("cluster command failed: {e}"))
    }

    pub async fn exists(&self, key: &str) -> bool {
        self.query::<i64>(redis::cmd("EXISTS").arg(key)).await == 1
    }

    /// TTL in seconds (-2: no key, -1: no expiry).
    pub async fn ttl(&self, key: &str) -> i64 {
        self.query(redis::cmd("TTL").arg(key)).await
    }

    /// A hash's fields; a search record's fields (see
    /// [`super::record_fields`]).
    pub async fn hash(&self, key: &str) -> BTreeMap<String, String> {
        let kind: String = self.query(redis::cmd("TYPE").arg(key)).await;
        if kind == "string" {
            let stored: Vec<u8> = self.query(redis::cmd("GET").arg(key)).await;
            let feedback: Vec<Vec<u8>> = self
                .query(
                    redis::cmd("LRANGE")
                        .arg(format!("{key}:feedback"))
                        .arg(0)
                        .arg(-1),
                )
                .await;
            return super::record_fields(key, &stored, &feedback);
        }
        self.query(redis::cmd("HGETALL").arg(key)).await
    }

    pub async fn list(&self, key: &str) -> Vec<String> {
        self.query(redis::cmd("LRANGE").arg(key).arg(0).arg(-1))
            .await
    }

    /// A zset as member → score.
    pub async fn zset(&self, key: &str) -> BTreeMap<String, f64> {
        let pairs: Vec<(String, f64)> = self
            .query(
                redis::cmd("ZRANGE")
                    .arg(key)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES"),
            )
            .await;
        pairs.into_iter().collect()
    }

    /// Redis writes happen after the answer: wait (bounded) for the key.
    pub async fn wait_for_key(&self, key: &str) {
        eventually(&format!("cluster key {key}"), || async {
            self.exists(key).await.then_some(())
        })
        .await;
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// A plain connection to one node (commands for other nodes' slots answer
/// MOVED).
async fn node_conn(client: &redis::Client) -> redis::aio::MultiplexedConnection {
    client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to a cluster node")
}

async fn info(client: &redis::Client, section: &str) -> Option<String> {
    let mut con = client.get_multiplexed_async_connection().await.ok()?;
    redis::cmd("INFO")
        .arg(section)
        .query_async(&mut con)
        .await
        .ok()
}

async fn cluster_info(client: &redis::Client) -> Option<String> {
    let mut con = client.get_multiplexed_async_connection().await.ok()?;
    redis::cmd("CLUSTER")
        .arg("INFO")
        .query_async(&mut con)
        .await
        .ok()
}

/// `CLUSTER SLOTS` as (start, end, (host, port)) of each range's master.
async fn slots(con: &mut redis::aio::MultiplexedConnection) -> Vec<(i64, i64, (String, i64))> {
    let raw: Vec<redis::Value> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(con)
        .await
        .expect("CLUSTER SLOTS");
    raw.into_iter()
        .map(|range| {
            let redis::Value::Array(fields) = range else {
                panic!("a CLUSTER SLOTS range is an array");
            };
            let start: i64 = redis::from_redis_value(fields[0].clone()).expect("start");
            let end: i64 = redis::from_redis_value(fields[1].clone()).expect("end");
            let redis::Value::Array(node) = fields[2].clone() else {
                panic!("a CLUSTER SLOTS node is an array");
            };
            let host: String = redis::from_redis_value(node[0].clone()).expect("host");
            let port: i64 = redis::from_redis_value(node[1].clone()).expect("port");
            (start, end, (host, port))
        })
        .collect()
}
