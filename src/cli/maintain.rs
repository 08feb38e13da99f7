//! `leafcache purge` and `leafcache replay`.

use anyhow::{Context, anyhow};
use clap::Args;

use super::{Failure, layout, redis as pool_of, redis_name, runtime};
use crate::admin::purge::{self, Target};
use crate::config::Config;
use crate::events::spool::Spool;
use crate::events::writer::replay_records;

#[derive(Args)]
#[command(group(clap::ArgGroup::new("what").required(true).multiple(true).args(["user", "key", "all_global"])))]
pub struct PurgeArgs {
    /// Every cache entry of this user (with --key: only that one).
    #[arg(long, value_name = "USER_ID", conflicts_with = "all_global")]
    user: Option<String>,
    /// The entry with this key hash (as in Cache-Status): global, or the
    /// user's with --user.
    #[arg(long, value_name = "HASH", conflicts_with = "all_global")]
    key: Option<String>,
    /// Every global entry.
    #[arg(long)]
    all_global: bool,
}

#[derive(Args)]
pub struct ReplayArgs {
    /// The spool directory (default: events.spool_dir of the config).
    #[arg(long, value_name = "DIR")]
    spool: Option<std::path::PathBuf>,
}

pub fn purge(config: &Config, args: PurgeArgs) -> Result<(), Failure> {
    let target = Target::new(args.user, args.key, args.all_global).map_err(|e| {
        let flag = match e.field.as_str() {
            "hash" => "--key",
            "user_id" => "--user",
            _ => "--all-global",
        };
        Failure::Usage(format!("{flag}: {}", e.problem))
    })?;
    let rt = runtime()?;
    let pool = pool_of(&rt, config)?;
    let removed = rt
        .block_on(purge::purge(&pool, &config.redis.key_prefix, &target))
        .with_context(|| format!("cannot purge in redis at {}", redis_name(config)))?;
    println!("removed {removed} cache entries; running proxies drop their copies");
    Ok(())
}

pub fn replay(config: &Config, args: ReplayArgs) -> Result<(), Failure> {
    let dir = args
        .spool
        .unwrap_or_else(|| config.events.spool_dir.clone());
    if !dir.is_dir() {
        return Err(Failure::Usage(format!("no spool at {}", dir.display())));
    }
    let mut spool = Spool::open(&dir, config.events.spool_max_bytes)
        .with_context(|| format!("cannot open the spool at {}", dir.display()))?;
    if spool.is_empty() {
        println!("spool at {} is empty: nothing to replay", dir.display());
        return Ok(());
    }
    let rt = runtime()?;
    let pool = pool_of(&rt, config)?;
    rt.block_on(pool.probe(tokio::time::Instant::now() + std::time::Duration::from_secs(5)))
        .with_context(|| format!("cannot reach redis at {}", redis_name(config)))?;
    let layout = layout(config);
    let mut events = 0;
    loop {
        let before = spool.bytes();
        // Blocks on the runtime for each record; this thread is not in it.
        let done = replay_records(&mut spool, &pool, &layout, rt.handle());
        events += done.events;
        if spool.is_empty() {
            break;
        }
        if spool.bytes() == before {
            return Err(anyhow!(
                "redis at {} stopped taking writes; {} bytes are still spooled ({events} events replayed)",
                redis_name(config),
                spool.bytes()
            )
            .into());
        }
    }
    println!("replayed {events} search events from {}", dir.display());
    Ok(())
}
