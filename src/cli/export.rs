//! `leafcache export`: the JSONL of `GET /v1/export`, written to a file,
//! stdout, or one file per day, optionally gzipped. Pages stream straight
//! to the output, so memory stays flat however long the range.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use flate2::Compression;
use flate2::write::GzEncoder;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{Failure, date_arg, redis, redis_name, runtime};
use crate::admin::dates;
use crate::admin::export::{ExportRange, Exporter};
use crate::config::Config;
use crate::redis::RedisPool;
use crate::redis::keys::Prefix;

#[derive(Args)]
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
    /// The output file; `-` or absent for stdout.
    #[arg(long, value_name = "FILE", conflicts_with = "daily")]
    out: Option<PathBuf>,
    /// Compress the output with gzip.
    #[arg(long)]
    gzip: bool,
    /// Write one file per day, DIR/searches-YYYY-MM-DD.jsonl[.gz].
    #[arg(long, value_name = "DIR")]
    daily: Option<PathBuf>,
}

pub fn run(config: &Config, args: ExportArgs) -> Result<(), Failure> {
    if args.to < args.from {
        return Err(Failure::Usage("--to is before --from".into()));
    }
    let rt = runtime()?;
    let pool = redis(&rt, config)?;
    let progress = progress_bar();
    let range = |from, to| ExportRange {
        from,
        to,
        intents: args.intents.clone(),
    };
    let exported = rt.block_on(async {
        if !progress.is_hidden() {
            let total = Exporter::new(pool.clone(), prefix(config), range(args.from, args.to))
                .total()
                .await
                .with_context(|| format!("cannot read from redis at {}", redis_name(config)))?;
            progress.set_length(total);
        }
        match &args.daily {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                let mut n = 0;
                for day in args.from..=args.to {
                    let name = format!(
                        "searches-{}.jsonl{}",
                        dates::format(day),
                        if args.gzip { ".gz" } else { "" }
                    );
                    let out = Output::file(&dir.join(name), args.gzip)?;
                    n += export(config, &pool, range(day, day), out, &progress).await?;
                }
                Ok::<u64, anyhow::Error>(n)
            }
            None => {
                let out = match args.out.as_deref() {
                    None => Output::stdout(args.gzip),
                    Some(p) if p == Path::new("-") => Output::stdout(args.gzip),
                    Some(p) => Output::file(p, args.gzip)?,
                };
                export(config, &pool, range(args.from, args.to), out, &progress).await
            }
        }
    })?;
    progress.finish_and_clear();
    eprintln!("leafcache: exported {exported} searches");
    Ok(())
}

fn prefix(config: &Config) -> Prefix {
    config.redis.key_prefix.clone()
}

/// Writes one range to `out`; the number of records written.
async fn export(
    config: &Config,
    pool: &RedisPool,
    range: ExportRange,
    mut out: Output,
    progress: &ProgressBar,
) -> anyhow::Result<u64> {
    let mut exporter = Exporter::new(pool.clone(), prefix(config), range);
    let mut n = 0;
    while let Some(page) = exporter
        .next_page()
        .await
        .with_context(|| format!("cannot read from redis at {}", redis_name(config)))?
    {
        out.write_all(&page.jsonl)?;
        n += page.records as u64;
        progress.inc(page.scanned as u64);
    }
    out.finish()?;
    Ok(n)
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

/// Where the lines go. A file is written under a temporary name and renamed
/// when complete, so a reader never takes a half-written export for a
/// whole one.
struct Output {
    writer: Writer,
    /// (temporary, final) names of a file output.
    rename: Option<(PathBuf, PathBuf)>,
}

enum Writer {
    Plain(BufWriter<Box<dyn Write>>),
    Gzip(GzEncoder<BufWriter<Box<dyn Write>>>),
}

impl Output {
    fn new(inner: Box<dyn Write>, gzip: bool, rename: Option<(PathBuf, PathBuf)>) -> Output {
        let buffered = BufWriter::with_capacity(256 * 1024, inner);
        let writer = if gzip {
            Writer::Gzip(GzEncoder::new(buffered, Compression::default()))
        } else {
            Writer::Plain(buffered)
        };
        Output { writer, rename }
    }

    fn stdout(gzip: bool) -> Output {
        Output::new(Box::new(io::stdout().lock()), gzip, None)
    }

    fn file(path: &Path, gzip: bool) -> anyhow::Result<Output> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".partial");
        let tmp = PathBuf::from(tmp);
        let file =
            File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        Ok(Output::new(
            Box::new(file),
            gzip,
            Some((tmp, path.to_path_buf())),
        ))
    }

    fn write_all(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        match &mut self.writer {
            Writer::Plain(w) => w.write_all(bytes),
            Writer::Gzip(w) => w.write_all(bytes),
        }
        .context("cannot write the export")
    }

    fn finish(self) -> anyhow::Result<()> {
        let mut buffered = match self.writer {
            Writer::Plain(w) => w,
            Writer::Gzip(w) => w.finish().context("cannot write the export")?,
        };
        buffered.flush().context("cannot write the export")?;
        drop(buffered);
        if let Some((tmp, done)) = self.rename {
            std::fs::rename(&tmp, &done).with_context(|| {
                format!("cannot rename {} to {}", tmp.display(), done.display())
            })?;
        }
        Ok(())
    }
}
