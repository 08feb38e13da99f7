//! `leafcache export`: the JSONL of `GET /v1/export` (or Parquet, or chat
//! pairs) to stdout, a file, an object store URL, or one object per day.
//! The command reads its arguments; [`crate::export`] does the writing.

use std::io::{self, IsTerminal};

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{Failure, date_arg, redis, redis_name, runtime};
use crate::admin::export::{ExportRange, Exporter};
use crate::config::Config;
use crate::export::{self as out, Encoder, Format, Place, Sink};

#[derive(Args)]
#[command(after_help = "Examples:
  leafcache export --from 2026-12-01 --to 2026-12-07 --gzip --out gs://bucket/searches.jsonl.gz
  leafcache export --from 2026-12-01 --to 2026-12-01 --intent product_search > day.jsonl
  leafcache export --from 2026-12-01 --to 2026-12-07 --daily s3://bucket/searches --format parquet
  leafcache export --redis-url redis://10.0.0.3:6379 --from 2026-12-01 --to 2026-12-01")]
pub struct ExportArgs {
    /// First day, inclusive (UTC).
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = date_arg)]
    from: u64,
    /// Last day, inclusive (UTC).
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = date_arg)]
    to: u64,
    /// Only searches with this intent (repeatable).
    #[arg(long = "intent", value_name = "NAME")]
    intents: Vec<String>,
    /// The output: a file, `-` (or absent) for stdout, or an object URL
    /// (gs://bucket/name, s3://bucket/name, file:///dir/name).
    #[arg(long, value_name = "FILE|-|URL", conflicts_with = "daily")]
    out: Option<String>,
    /// Compress JSONL (or chat) output with gzip.
    #[arg(long)]
    gzip: bool,
    /// jsonl (the default), parquet (typed columns) or chat (intent
    /// training pairs, Hugging Face TRL's format).
    #[arg(long, value_enum, default_value = "jsonl")]
    format: Format,
    /// One object per day under DIR or URL, in Hive partitions:
    /// date=YYYY-MM-DD/searches.jsonl[.gz] (searches.parquet, chat.jsonl[.gz]).
    #[arg(long, value_name = "DIR|URL")]
    daily: Option<String>,
}

pub fn run(config: &Config, args: ExportArgs) -> Result<(), Failure> {
    if args.to < args.from {
        return Err(Failure::Usage("--to is before --from".into()));
    }
    if args.gzip && args.format == Format::Parquet {
        return Err(Failure::Usage(
            "--gzip does not apply to --format parquet (it is compressed inside)".into(),
        ));
    }
    let place = match (&args.daily, args.out.as_deref()) {
        (Some(dir), _) => Place::parse(dir, false),
        (None, Some(file)) => Place::parse(file, true),
        (None, None) => Ok(Place::Stdout),
    }
    .map_err(|e| Failure::Usage(e.to_string()))?;
    let rt = runtime()?;
    let pool = redis(&rt, config)?;
    let progress = progress_bar();
    let exporter = |from, to| {
        let range = ExportRange {
            from,
            to,
            intents: args.intents.clone(),
        };
        Exporter::new(pool.clone(), config.redis.key_prefix.clone(), range)
    };
    let redis = redis_name(config);
    let (searches, rows) = rt.block_on(async {
        if !progress.is_hidden() {
            let total = exporter(args.from, args.to)
                .total()
                .await
                .with_context(|| format!("cannot read from redis at {redis}"))?;
            progress.set_length(total);
        }
        let mut on_page = |page: &crate::admin::export::Page| progress.inc(page.scanned as u64);
        let env = |k: &str| std::env::var(k).ok();
        let encoder = || Encoder::new(args.format, args.gzip);
        match (&place, args.daily.is_some()) {
            (Place::Stdout, _) => {
                let mut exporter = exporter(args.from, args.to);
                out::write(
                    &mut exporter,
                    encoder()?,
                    Sink::stdout(),
                    &redis,
                    &mut on_page,
                )
                .await
            }
            (Place::Store(url), false) => {
                let sink = url.open(&env)?.object();
                let mut exporter = exporter(args.from, args.to);
                out::write(&mut exporter, encoder()?, sink, &redis, &mut on_page).await
            }
            (Place::Store(url), true) => {
                let folder = url.open(&env)?;
                let mut total = (0, 0);
                for day in args.from..=args.to {
                    let sink = folder.child(&out::daily_object(day, args.format, args.gzip));
                    let mut exporter = exporter(day, day);
                    let (s, r) =
                        out::write(&mut exporter, encoder()?, sink, &redis, &mut on_page).await?;
                    total = (total.0 + s, total.1 + r);
                }
                Ok(total)
            }
        }
    })?;
    progress.finish_and_clear();
    match args.format {
        Format::Chat => {
            eprintln!("leafcache: exported {rows} training pairs from {searches} searches")
        }
        _ => eprintln!("leafcache: exported {searches} searches"),
    }
    Ok(())
}

fn progress_bar() -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} searches  {per_sec}  eta {eta}")
    {
        bar.set_style(style);
    }
    bar
}
