//! Redis Cluster (`redis.cluster = true`, e.g. Memorystore cluster mode)
//! through redis-rs's cluster client, which keeps a multiplexed connection
//! per node, routes each command by its key's slot and follows `MOVED`/`ASK`.
//!
//! What redis-rs does not do is split a pipeline whose keys live in several
//! slots: it sends a pipeline to the node of its first key. [`BySlot`] does
//! that split, so every caller may keep building one pipeline (a batch of
//! search records, a stats read) as on a single node:
//!
//! - the commands are grouped by the slot of their key (the first argument;
//!   every command leafcache pipelines has its key there);
//! - each group is one plain pipeline to its slot's master, all groups in
//!   flight at once;
//! - the answers are put back in the order of the original pipeline (for a
//!   `MULTI/EXEC` pipeline, in the shape of one `EXEC` answer), and the whole
//!   fails when any group fails.
//!
//! A `MULTI/EXEC` pipeline is sent as plain per-slot pipelines: a transaction
//! cannot span slots, and redis-rs follows a `MOVED` inside a plain pipeline
//! (re-sending the group to the slot's new owner and refreshing its slot map)
//! but not inside a transaction, which would then fail until something else
//! refreshed the map. What is given up is only that a slot's group could be
//! cut short by a dropped connection; the caller then sees a failure and
//! sends the whole again (the event writer's batches are at least once).
//! Grouping by slot rather than by node is what keeps a redirected group
//! whole: all its keys moved together.
//!
//! Multi-key single commands (`MGET` of the user and global entries,
//! `UNLINK` of a purge) are split per slot by redis-rs itself. Commands that
//! must run on each master (`SCAN`) go through [`Cluster::masters`] and
//! [`Cluster::query_on`]; health is [`Cluster::probe`].

use std::collections::HashMap;
use std::time::Duration;

use bb8_redis::redis::{
    self, Cmd, ErrorKind, FromRedisValue, IntoConnectionInfo, Pipeline, RedisError, RedisFuture,
    RedisResult, Value,
    cluster::{ClusterClientBuilder, ClusterConfig},
    cluster_async::ClusterConnection,
    cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr},
};
use futures_util::future::try_join_all;

use super::RedisConfig;

/// The cluster connection: cheap to clone, shared by every caller.
#[derive(Clone)]
pub struct Cluster {
    conn: ClusterConnection,
    /// How to reach a node directly (pub/sub): the URL's credentials and TLS.
    seed: redis::ConnectionInfo,
    tls_ca_pem: Option<Vec<u8>>,
}

/// A master of the cluster, as `CLUSTER SLOTS` names it (and redis-rs
/// knows its connection).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Master {
    pub host: String,
    pub port: u16,
}

impl Cluster {
    /// Starts the cluster client without waiting for it: the nodes are
    /// connected in the background (Redis may be down at startup), and
    /// commands sent meanwhile wait for the connection or fail with it.
    /// Must run inside the Tokio runtime.
    pub fn new(cfg: &RedisConfig, connect_timeout: Duration) -> Result<Cluster, RedisError> {
        let seed = cfg.url.as_str().into_connection_info()?;
        let mut builder = ClusterClientBuilder::new(vec![seed.clone()])
            .connection_timeout(connect_timeout)
            .response_timeout(RESPONSE_TIMEOUT);
        if cfg.url.starts_with("rediss://") || cfg.tls_ca_pem.is_some() {
            // As for a single node: ring is the process's crypto provider.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        if let Some(pem) = &cfg.tls_ca_pem {
            if !cfg.url.starts_with("rediss://") {
                return Err(RedisError::from((
                    ErrorKind::InvalidClientConfig,
                    "tls_ca_file needs a rediss:// URL",
                )));
            }
            builder = builder.certs(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            });
        }
        let client = builder.build()?;
        let conn = client.get_pending_async_connection_with_config(
            ClusterConfig::new()
                .set_connection_timeout(connect_timeout)
                .set_response_timeout(RESPONSE_TIMEOUT),
        );
        Ok(Cluster {
            conn,
            seed,
            tls_ca_pem: cfg.tls_ca_pem.clone(),
        })
    }

    /// Runs a command or a pipeline, routed by slot (see the module doc).
    pub async fn query_cmd<T: FromRedisValue>(&self, cmd: &Cmd) -> RedisResult<T> {
        cmd.query_async(&mut BySlot(self.conn.clone())).await
    }

    pub async fn query_pipe<T: FromRedisValue>(&self, pipe: &Pipeline) -> RedisResult<T> {
        pipe.query_async(&mut BySlot(self.conn.clone())).await
    }

    /// The masters and a slot of each, from `CLUSTER SLOTS`; an error while
    /// some slot has no master (a cluster still forming, or broken).
    pub async fn masters(&self) -> RedisResult<Vec<Master>> {
        let reply = self
            .conn
            .clone()
            .route_command(
                redis::cmd("CLUSTER").arg("SLOTS").to_owned(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary),
            )
            .await?;
        let (masters, covered) = parse_cluster_slots(reply, self.seed_host())?;
        if covered < SLOTS {
            return Err(RedisError::from((
                ErrorKind::Server(redis::ServerErrorKind::ClusterDown),
                "not every slot has a master",
                format!("{covered} of {SLOTS} slots are served"),
            )));
        }
        Ok(masters)
    }

    /// Whether the cluster can take reads and writes: every slot has a
    /// master and every master answers `PING`, through the connection the
    /// callers use.
    pub async fn probe(&self) -> RedisResult<()> {
        let masters = self.masters().await?;
        let ping = redis::cmd("PING");
        try_join_all(masters.iter().map(|m| self.query_on::<()>(m, &ping))).await?;
        Ok(())
    }

    /// Runs `cmd` on `master` itself. By address, not by one of its slots:
    /// redis-rs sends a command for a slot whose node is unreachable to
    /// another node, which for a keyless command (`PING`, `SCAN`) would
    /// answer for the wrong node. By address it fails instead.
    pub async fn query_on<T: FromRedisValue>(&self, master: &Master, cmd: &Cmd) -> RedisResult<T> {
        let value = self
            .conn
            .clone()
            .route_command(
                cmd.clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: master.host.clone(),
                    port: master.port,
                }),
            )
            .await?;
        Ok(redis::from_redis_value(value)?)
    }

    /// A plain client for one node, with the URL's credentials and TLS: for
    /// pub/sub, which is not multiplexed.
    pub fn node_client(&self, master: &Master) -> RedisResult<redis::Client> {
        let addr = match self.seed.addr() {
            redis::ConnectionAddr::TcpTls { insecure, .. } => redis::ConnectionAddr::TcpTls {
                host: master.host.clone(),
                port: master.port,
                insecure: *insecure,
                tls_params: None,
            },
            _ => redis::ConnectionAddr::Tcp(master.host.clone(), master.port),
        };
        let info = self.seed.clone().set_addr(addr);
        match &self.tls_ca_pem {
            Some(pem) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
            None => redis::Client::open(info),
        }
    }

    fn seed_host(&self) -> &str {
        match self.seed.addr() {
            redis::ConnectionAddr::Tcp(host, _) | redis::ConnectionAddr::TcpTls { host, .. } => {
                host
            }
            _ => "",
        }
    }
}

/// redis-rs's per-attempt answer bound; callers' deadlines are shorter.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Slots of a Redis Cluster.
const SLOTS: u32 = 16384;

/// `CLUSTER SLOTS`: `[[start, end, [host, port, id, ...], replicas...], ...]`,
/// as the masters (each named once) and how many slots they serve. An empty host means "the node you asked", which is one behind
/// the seed.
fn parse_cluster_slots(reply: Value, seed_host: &str) -> RedisResult<(Vec<Master>, u32)> {
    let bad = || RedisError::from((ErrorKind::UnexpectedReturnType, "unreadable CLUSTER SLOTS"));
    let Value::Array(ranges) = reply else {
        return Err(bad());
    };
    let mut masters: Vec<Master> = Vec::new();
    let mut covered: u32 = 0;
    for range in ranges {
        let Value::Array(fields) = range else {
            return Err(bad());
        };
        let mut fields = fields.into_iter();
        let start = match fields.next() {
            Some(Value::Int(n)) => u16::try_from(n).map_err(|_| bad())?,
            _ => return Err(bad()),
        };
        let end = match fields.next() {
            Some(Value::Int(n)) => u16::try_from(n).map_err(|_| bad())?,
            _ => return Err(bad()),
        };
        covered += u32::from(end.saturating_sub(start)) + 1;
        let Some(Value::Array(node)) = fields.next() else {
            return Err(bad());
        };
        let mut node = node.into_iter();
        let host = match node.next() {
            Some(Value::BulkString(b)) => String::from_utf8(b).map_err(|_| bad())?,
            Some(Value::SimpleString(s)) => s,
            _ => return Err(bad()),
        };
        let host = if host.is_empty() || host == "?" {
            seed_host.to_owned()
        } else {
            host
        };
        let port = match node.next() {
            Some(Value::Int(n)) => u16::try_from(n).map_err(|_| bad())?,
            _ => return Err(bad()),
        };
        if !masters.iter().any(|m| m.host == host && m.port == port) {
            masters.push(Master { host, port });
        }
    }
    Ok((masters, covered))
}

/// The cluster connection as a redis-rs connection whose pipelines are split
/// by slot (see the module doc).
struct BySlot(ClusterConnection);

impl redis::aio::ConnectionLike for BySlot {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.0.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let atomic = pipeline.is_transaction();
            let groups = group_by_slot(pipeline)?;
            if groups.len() <= 1 && !atomic {
                // One slot: redis-rs routes it as it is.
                return self.0.req_packed_commands(pipeline, offset, count).await;
            }
            let cmds: Vec<&Cmd> = pipeline.cmd_iter().collect();
            let sends = groups.iter().map(|g| {
                let mut conn = self.0.clone();
                let mut sub = Pipeline::with_capacity(g.positions.len());
                for &i in &g.positions {
                    sub.add_command(cmds[i].clone());
                }
                let n = g.positions.len();
                let route =
                    SingleNodeRoutingInfo::SpecificNode(Route::with_slot(g.slot, SlotAddr::Master));
                async move { conn.route_pipeline(sub, 0, n, route).await }
            });
            let answers = try_join_all(sends).await?;
            let values = reassemble(pipeline.len(), &groups, answers)?;
            // The shape a transaction's caller expects: one EXEC answer.
            Ok(if atomic {
                vec![Value::Array(values)]
            } else {
                values
            })
        })
    }

    fn get_db(&self) -> i64 {
        0
    }
}

/// The commands of one slot: their positions in the original pipeline.
struct Group {
    slot: Slot,
    positions: Vec<usize>,
}

fn group_by_slot(pipeline: &Pipeline) -> RedisResult<Vec<Group>> {
    let mut groups: Vec<Group> = Vec::new();
    let mut index: HashMap<Slot, usize> = HashMap::new();
    for (i, cmd) in pipeline.cmd_iter().enumerate() {
        let Some(redis::Arg::Simple(key)) = cmd.args_iter().nth(1) else {
            return Err(RedisError::from((
                ErrorKind::Client,
                "a pipelined command without a key cannot be routed in cluster mode",
            )));
        };
        let slot = Slot::for_key(key);
        let g = *index.entry(slot).or_insert_with(|| {
            groups.push(Group {
                slot,
                positions: Vec::new(),
            });
            groups.len() - 1
        });
        groups[g].positions.push(i);
    }
    Ok(groups)
}

/// Puts each group's answers back at their commands' positions.
fn reassemble(len: usize, groups: &[Group], answers: Vec<Vec<Value>>) -> RedisResult<Vec<Value>> {
    let mut out = vec![Value::Nil; len];
    for (group, answer) in groups.iter().zip(answers) {
        if answer.len() != group.positions.len() {
            return Err(RedisError::from((
                ErrorKind::UnexpectedReturnType,
                "a slot's pipeline gave the wrong number of answers",
            )));
        }
        for (&i, v) in group.positions.iter().zip(answer) {
            out[i] = v;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(key: &str) -> Slot {
        Slot::for_key(key)
    }

    #[test]
    fn pipelines_are_grouped_by_slot_keeping_command_order() {
        let mut pipe = redis::pipe();
        pipe.cmd("HSET").arg("search:{a}").arg("f").arg("v");
        pipe.cmd("ZADD")
            .arg("searches:daily:2026-01-01")
            .arg(1)
            .arg("a");
        pipe.cmd("RPUSH").arg("search:{a}:feedback").arg("x");
        pipe.cmd("EXPIRE").arg("searches:daily:2026-01-01").arg(60);
        let groups = group_by_slot(&pipe).unwrap();
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].slot, slot("a"));
        assert_eq!(groups[0].positions, vec![0, 2]);
        assert_eq!(groups[1].slot, slot("searches:daily:2026-01-01"));
        assert_eq!(groups[1].positions, vec![1, 3]);
    }

    #[test]
    fn a_command_without_a_key_is_refused() {
        let mut pipe = redis::pipe();
        pipe.cmd("PING");
        assert!(group_by_slot(&pipe).is_err());
    }

    #[test]
    fn answers_go_back_to_their_commands() {
        let groups = vec![
            Group {
                slot: slot("a"),
                positions: vec![0, 2],
            },
            Group {
                slot: slot("b"),
                positions: vec![1],
            },
        ];
        let values = reassemble(
            3,
            &groups,
            vec![vec![Value::Int(0), Value::Int(2)], vec![Value::Int(1)]],
        )
        .unwrap();
        assert_eq!(values, vec![Value::Int(0), Value::Int(1), Value::Int(2)]);
        assert!(reassemble(3, &groups, vec![vec![], vec![]]).is_err());
    }

    #[test]
    fn cluster_slots_name_each_master_once() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("10.0.0.1", 6379),
            ]),
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(10922),
                node("", 6380),
                node("10.0.0.9", 6379),
            ]),
            Value::Array(vec![
                Value::Int(10923),
                Value::Int(12000),
                node("10.0.0.1", 6379),
            ]),
        ]);
        let (masters, covered) = parse_cluster_slots(reply, "seed").unwrap();
        assert_eq!(covered, 12001);
        assert_eq!(
            masters,
            vec![
                Master {
                    host: "10.0.0.1".into(),
                    port: 6379,
                },
                Master {
                    host: "seed".into(),
                    port: 6380,
                },
            ]
        );
        assert!(parse_cluster_slots(Value::Int(1), "seed").is_err());
    }
}
