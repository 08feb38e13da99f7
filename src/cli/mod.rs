//! The batch commands of docs/contract.md section 1: `export`, `history`, `stats`,
//! `purge`, `replay` and `explain`. The binary hands them the config exactly
//! as `serve` gets it (`--config`, else ./proxy.toml; then the environment,
//! `REDIS_URL` and the others; then `--redis-url`). They print tables on a
//! terminal and JSON with `--json`, and fail with one line and exit 1
//! (runtime) or 2 (usage, config). Each command's `--help` ends with examples.
//!
//! - [`export`]: JSONL, Parquet or chat pairs to stdout, a file, an object
//!   store URL, or one object per day (the writing is [`crate::export`]'s).
//! - [`report`]: `history` and `stats` as tables or JSON.
//! - [`maintain`]: `purge` and `replay`.
//! - [`explain`]: what the proxy would do with a request (no Redis).

mod explain;
mod export;
mod maintain;
mod report;
mod table;

use std::process::ExitCode;

use clap::Subcommand;

use crate::config::{Config, ConfigError};
use crate::events::write::Layout;
use crate::redis::RedisPool;

pub use explain::ExplainArgs;
pub use export::ExportArgs;
pub use maintain::{PurgeArgs, ReplayArgs};
pub use report::{HistoryArgs, StatsArgs};

/// The batch commands, flattened into the binary's subcommands.
#[derive(Subcommand)]
pub enum OpsCommand {
    /// Export logged searches as JSONL, with their feedback (training data).
    Export(ExportArgs),
    /// Show a user's recent searches, newest first.
    History(HistoryArgs),
    /// Show a day's statistics: searches, intents, top products and queries, cache.
    Stats(StatsArgs),
    /// Remove cache entries from Redis and from every running proxy's memory.
    Purge(PurgeArgs),
    /// Push the spooled search events into Redis now.
    Replay(ReplayArgs),
    /// Show what the proxy would do with a request: route, fields, key inputs, hash, bypass.
    Explain(ExplainArgs),
}

/// A failure of a batch command, with its exit code.
#[derive(Debug)]
pub enum Failure {
    /// Bad usage or config: exit 2.
    Usage(String),
    /// Anything that went wrong while running: exit 1.
    Runtime(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Runtime(e)
    }
}

/// Runs a batch command with the config the command line named, its
/// overrides (environment, `--redis-url`) already applied.
pub fn run(cmd: OpsCommand, config: Result<Config, ConfigError>) -> ExitCode {
    quiet_logs();
    let result = config
        .map_err(|e| Failure::Usage(e.to_string()))
        .and_then(|config| match cmd {
            OpsCommand::Export(a) => export::run(&config, a),
            OpsCommand::History(a) => report::history(&config, a),
            OpsCommand::Stats(a) => report::stats(&config, a),
            OpsCommand::Purge(a) => maintain::purge(&config, a),
            OpsCommand::Replay(a) => maintain::replay(&config, a),
            OpsCommand::Explain(a) => explain::run(&config, a),
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("leafcache: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            // One line: the error and its causes.
            eprintln!("leafcache: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Only errors are logged (to stderr) unless `RUST_LOG` asks for more: the
/// pool's warnings are written for a running proxy, not for a command that
/// reports its own failure in one line.
fn quiet_logs() {
    let filter = crate::telemetry::env_filter("error");
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// A small runtime for one command. One worker thread rather than the
/// current thread: `replay` drives Redis through `Handle::block_on` from this
/// thread, which only a multi-thread runtime's workers can serve.
fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(anyhow::anyhow!("cannot start the runtime: {e}")))
}

/// The pool, built inside the runtime (bb8 may start tasks).
fn redis(rt: &tokio::runtime::Runtime, config: &Config) -> Result<RedisPool, Failure> {
    rt.block_on(async { RedisPool::new(&config.redis) })
        .map_err(|e| Failure::Usage(format!("redis.url: {e}")))
}

fn layout(config: &Config) -> Layout {
    Layout::new(config)
}

/// `--date`, `--from`, `--to`: a strict UTC date, as a day number.
fn date_arg(text: &str) -> Result<u64, String> {
    crate::admin::dates::parse(text).ok_or_else(|| format!("{text:?} is not a date YYYY-MM-DD"))
}

/// Where Redis is, for error messages (without a password).
fn redis_name(config: &Config) -> String {
    crate::redis::redact_url(&config.redis.url)
}
