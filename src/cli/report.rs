//! `leafcache history` and `leafcache stats`: the same data as
//! `/v1/users/<id>/history` and `/v1/stats`, as tables or JSON.

use anyhow::Context;
use clap::Args;
use serde_json::Value;

use super::{Failure, date_arg, redis, redis_name, runtime, table};
use crate::admin::quality::Quality;
use crate::admin::stats::Stats;
use crate::admin::{dates, history, stats};
use crate::config::Config;

#[derive(Args)]
#[command(after_help = "Examples:
  leafcache history alice --limit 20
  leafcache history alice --json --redis-url redis://10.0.0.3:6379")]
pub struct HistoryArgs {
    /// The user id, as logged (hashed when identity.hash_user_id is on).
    user_id: String,
    /// How many searches to show.
    #[arg(long, default_value_t = history::DEFAULT_LIMIT)]
    limit: usize,
    /// Print a JSON array, newest first.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
#[command(after_help = "Examples:
  leafcache stats
  leafcache stats --date 2026-12-01 --top 20 --json")]
pub struct StatsArgs {
    /// The day (UTC); today when absent.
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = date_arg)]
    date: Option<u64>,
    /// How many top products and queries to show.
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn history(config: &Config, args: HistoryArgs) -> Result<(), Failure> {
    let rt = runtime()?;
    let pool = redis(&rt, config)?;
    let entries = rt
        .block_on(history::read(
            &pool,
            &config.redis.key_prefix,
            &args.user_id,
            args.limit,
        ))
        .with_context(|| format!("cannot read from redis at {}", redis_name(config)))?;
    if args.json {
        println!("{}", Value::Array(entries));
        return Ok(());
    }
    if entries.is_empty() {
        println!("no searches logged for user {:?}", args.user_id);
        return Ok(());
    }
    let cell = |e: &Value, k: &str| match &e[k] {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            [
                "timestamp",
                "query",
                "intent",
                "results_count",
                "cache",
                "search_id",
            ]
            .iter()
            .map(|k| cell(e, k))
            .collect()
        })
        .collect();
    print!(
        "{}",
        table::render(
            &["TIME", "QUERY", "INTENT", "RESULTS", "CACHE", "SEARCH ID"],
            &rows
        )
    );
    Ok(())
}

pub fn stats(config: &Config, args: StatsArgs) -> Result<(), Failure> {
    let day = args.date.unwrap_or_else(dates::today);
    let rt = runtime()?;
    let pool = redis(&rt, config)?;
    let report = rt
        .block_on(stats::read(&pool, &config.redis.key_prefix, day, args.top))
        .with_context(|| format!("cannot read from redis at {}", redis_name(config)))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).context("cannot encode the report")?
        );
    } else {
        print!("{}", render_stats(&report));
    }
    Ok(())
}

/// The report as a terminal page: totals, the day's shape by hour, then the
/// lists.
fn render_stats(s: &Stats) -> String {
    let c = &s.cache;
    let mut out = format!(
        "leafcache stats for {} (UTC)\n\nsearches  {}\ncache     {:.1}% hit ratio  (hit {}, stale {}, miss {}, bypass {})\n",
        s.date,
        s.total_searches,
        c.hit_ratio * 100.0,
        c.hit,
        c.stale,
        c.miss,
        c.bypass
    );
    out.push_str("\nsearches by hour\n");
    let peak = s.hourly.values().copied().max().unwrap_or(0).max(1);
    for (hour, n) in &s.hourly {
        let bar = "#".repeat(((n * 40).div_ceil(peak)) as usize);
        out.push_str(&format!("  {hour}  {n:>8}  {bar}\n"));
    }
    let section = |out: &mut String, title: &str, headers: &[&str], rows: Vec<Vec<String>>| {
        out.push_str(&format!("\n{title}\n"));
        if rows.is_empty() {
            out.push_str("  (none)\n");
        } else {
            for line in table::render(headers, &rows).lines() {
                out.push_str(&format!("  {line}\n"));
            }
        }
    };
    let mut intents: Vec<(&String, &u64)> = s.intents.iter().collect();
    intents.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    section(
        &mut out,
        "intents",
        &["INTENT", "SEARCHES"],
        intents
            .into_iter()
            .map(|(i, n)| vec![i.clone(), n.to_string()])
            .collect(),
    );
    section(
        &mut out,
        "top products",
        &["PRODUCT", "RETURNED"],
        s.top_products
            .iter()
            .map(|p| vec![p.id.clone(), p.count.to_string()])
            .collect(),
    );
    section(
        &mut out,
        "top queries",
        &["QUERY", "SEARCHES"],
        s.top_queries
            .iter()
            .map(|q| vec![q.query.clone(), q.count.to_string()])
            .collect(),
    );
    section(
        &mut out,
        "queries with no results",
        &["QUERY", "SEARCHES"],
        s.zero_result_queries
            .iter()
            .map(|q| vec![q.query.clone(), q.count.to_string()])
            .collect(),
    );
    render_quality(&mut out, &s.quality);
    section(
        &mut out,
        "queries with results and no clicks",
        &["QUERY", "SEARCHES"],
        s.quality
            .top_queries_without_clicks
            .iter()
            .map(|q| vec![q.query.clone(), q.count.to_string()])
            .collect(),
    );
    out
}

/// The quality figures, `-` where the denominator is 0.
fn render_quality(out: &mut String, q: &Quality) {
    let percent = |r: Option<f64>| r.map_or("-".to_string(), |r| format!("{:.1}%", r * 100.0));
    let number = |r: Option<f64>| r.map_or("-".to_string(), |r| format!("{r:.3}"));
    out.push_str(&format!(
        "\nsearch quality  ({} searches read, {} with results, {} in sessions)\n",
        q.searches, q.searches_with_results, q.searches_with_session
    ));
    for (name, value) in [
        ("click-through rate", percent(q.click_through_rate)),
        ("no-click rate", percent(q.no_click_rate)),
        ("zero-result rate", percent(q.zero_result_rate)),
        ("mean click position", number(q.mean_click_position)),
        ("mean reciprocal rank", number(q.mean_reciprocal_rank)),
        ("add-to-order rate", percent(q.add_to_order_rate)),
        ("purchase rate", percent(q.purchase_rate)),
        ("reformulation rate", percent(q.reformulation_rate)),
    ] {
        out.push_str(&format!("  {name:<22}{value:>8}\n"));
    }
}
