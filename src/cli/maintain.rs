//! `leafcache purge` and `leafcache replay`.

use anyhow::{Context, anyhow};
use clap::Args;

use super::{Failure, layout, redis as pool_of, redis_name, runtime};
use crate::admin::purge::{self, Purge};
use crate::cache::invalidation::PurgeRequest;
use crate::config::Config;
use crate::events::spool::Spool;
use crate::events::writer::replay_records;

#[derive(Args)]
#[command(after_help = "Examples:
  leafcache purge --user alice
  leafcache purge --user alice --key HASH
  leafcache purge --product SKU-123 SKU-456 --soft
  leafcache purge --all-global --redis-url redis://10.0.0.3:6379")]
#[command(group(clap::ArgGroup::new("what").required(true).multiple(true).args(["user", "key", "all_global", "product", "supplier"])))]
pub struct PurgeArgs {
    /// Every cache entry of this user (with --key: only that one).
    #[arg(long, value_name = "USER_ID", conflicts_with_all = ["all_global", "product", "supplier"])]
    user: Option<String>,
    /// The entry with this key hash (as in Cache-Status): global, or the
    /// user's with --user.
    #[arg(long, value_name = "HASH", conflicts_with_all = ["all_global", "product", "supplier"])]
    key: Option<String>,
    /// Every global entry.
    #[arg(long, conflicts_with_all = ["product", "supplier"])]
    all_global: bool,
    /// Every entry, in any scope, whose answer shows one of these products.
    #[arg(long, value_name = "ID", num_args = 1.., conflicts_with = "supplier")]
    product: Vec<String>,
    /// Every entry whose answer shows a product of one of these suppliers.
    #[arg(long, value_name = "ID", num_args = 1..)]
    supplier: Vec<String>,
    /// Mark the entries stale instead of removing them: the next request
    /// revalidates or refetches, and a failing backend still has them.
    #[arg(long)]
    soft: bool,
}

#[derive(Args)]
#[command(after_help = "Examples:
  leafcache replay
  leafcache replay --spool /var/lib/leafcache/spool --redis-url redis://10.0.0.3:6379")]
pub struct ReplayArgs {
    /// The spool directory (default: events.spool_dir of the config).
    #[arg(long, value_name = "DIR")]
    spool: Option<std::path::PathBuf>,
}

pub fn purge(config: &Config, args: PurgeArgs) -> Result<(), Failure> {
    let ids = |ids: Vec<String>| (!ids.is_empty()).then_some(ids);
    let purge = Purge::new(PurgeRequest {
        user_id: args.user,
        hash: args.key,
        all_global: args.all_global,
        product_ids: ids(args.product),
        supplier_ids: ids(args.supplier),
        soft: args.soft,
    })
    .map_err(|e| {
        let flag = match e.field.as_str() {
            "hash" => "--key",
            "user_id" => "--user",
            "product_ids" => "--product",
            "supplier_ids" => "--supplier",
            _ => "--all-global",
        };
        Failure::Usage(format!("{flag}: {}", e.problem))
    })?;
    let rt = runtime()?;
    let pool = pool_of(&rt, config)?;
    let done = rt
        .block_on(purge::purge(&pool, &config.redis.key_prefix, &purge))
        .with_context(|| format!("cannot purge in redis at {}", redis_name(config)))?;
    if purge.soft {
        println!(
            "marked {} cache entries stale; running proxies drop their copies",
            done.marked_stale
        );
    } else {
        println!(
            "removed {} cache entries; running proxies drop their copies",
            done.removed
        );
    }
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
