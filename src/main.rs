//! The `leafcache` binary: parse the command line, load the config, run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use leafcache::config::{Config, ConfigError, Overrides};

/// mimalloc: the proxy allocates many small, short-lived objects per request
/// (header maps, strings, events); glibc malloc spent ~20% of a hit's CPU.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "leafcache",
    version,
    about = "A caching, logging sidecar for search APIs"
)]
struct Cli {
    /// The config file (default: ./proxy.toml, else the built-in defaults).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Redis URL (overrides REDIS_URL and the file).
    // Global like --config, so every command, batch or serve, takes it
    // before or after its name.
    #[arg(long, global = true, value_name = "URL")]
    redis_url: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default).
    #[command(after_help = "Examples:
  leafcache serve --config /etc/leafcache/proxy.toml
  leafcache serve --upstream http://127.0.0.1:8000 --redis-url redis://10.0.0.3:6379
  REDIS_URL=rediss://:PASSWORD@redis.internal:6380 PORT=8080 leafcache serve")]
    Serve(ServeArgs),
    /// Validate a config file and exit (0 valid, 2 invalid).
    #[command(after_help = "Examples:
  leafcache check-config proxy.toml
  leafcache check-config --config /etc/leafcache/proxy.toml")]
    CheckConfig {
        /// The file to check (default: --config, else ./proxy.toml).
        file: Option<PathBuf>,
    },
    /// Run the proxy in front of a built-in demo search backend.
    #[command(after_help = "Examples:
  leafcache demo
  leafcache demo --listen 127.0.0.1:8080 --think-ms 100 --redis-url redis://127.0.0.1:6380")]
    Demo(DemoArgs),
    /// Run only the demo search backend (for benchmarks and trials).
    #[command(after_help = "Examples:
  leafcache demo-backend --listen 127.0.0.1:8000 --think-ms 40")]
    DemoBackend {
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8000")]
        listen: String,
        #[arg(long, value_name = "MS", default_value_t = 0)]
        think_ms: u64,
    },
    #[command(flatten)]
    Ops(leafcache::cli::OpsCommand),
}

#[derive(Args, Default)]
struct ServeArgs {
    /// Address to listen on (overrides LEAFCACHE_LISTEN, PORT and the file).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Backend URL (overrides LEAFCACHE_UPSTREAM and the file).
    #[arg(long, value_name = "URL")]
    upstream: Option<String>,
}

#[derive(Args)]
struct DemoArgs {
    /// Where the demo backend listens.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8000")]
    backend_listen: String,
    /// The demo backend's simulated think time per search.
    #[arg(long, value_name = "MS", default_value_t = 40)]
    think_ms: u64,
    #[command(flatten)]
    serve: ServeArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Batch commands print their own one-line errors; the proxy's logs would
    // only add noise there.
    if !matches!(cli.command, Some(Command::Ops(_))) {
        leafcache::telemetry::init();
    }
    let redis_url = cli.redis_url;
    match cli.command {
        Some(Command::CheckConfig { file }) => check_config(file.or(cli.config), redis_url),
        Some(Command::Serve(args)) => serve(cli.config, args.with(redis_url), None),
        Some(Command::Demo(demo)) => {
            let backend = demo.backend_listen.clone();
            let mut overrides = demo.serve.with(redis_url);
            overrides
                .upstream
                .get_or_insert_with(|| format!("http://{backend}"));
            serve(cli.config, overrides, Some((backend, demo.think_ms)))
        }
        Some(Command::DemoBackend { listen, think_ms }) => demo_backend(&listen, think_ms),
        Some(Command::Ops(cmd)) => {
            let overrides = Overrides {
                redis_url,
                ..Overrides::default()
            };
            leafcache::cli::run(cmd, configure(cli.config, &overrides))
        }
        None => serve(cli.config, ServeArgs::default().with(redis_url), None),
    }
}

impl ServeArgs {
    /// The flags that override the file, with the global `--redis-url`.
    fn with(self, redis_url: Option<String>) -> Overrides {
        Overrides {
            listen: self.listen,
            upstream: self.upstream,
            redis_url,
        }
    }
}

fn demo_backend(addr: &str, think_ms: u64) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return fail(1, format!("cannot start the runtime: {e}")),
    };
    runtime.block_on(async {
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => return fail(1, format!("cannot listen on {addr}: {e}")),
        };
        let stats = Arc::new(leafcache::demo::DemoStats::default());
        let serve = leafcache::demo::serve(listener, Duration::from_millis(think_ms), stats);
        tokio::select! {
            () = serve => {},
            () = leafcache::app::shutdown_signal() => {},
        }
        ExitCode::SUCCESS
    })
}

fn fail(code: u8, msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("leafcache: {msg}");
    ExitCode::from(code)
}

/// The config the command line asks for: `--config`, else ./proxy.toml,
/// else the built-in defaults (the shipped proxy.toml).
fn load(path: Option<PathBuf>) -> Result<Config, ConfigError> {
    match path {
        Some(p) => Config::load(&p),
        None if Path::new("proxy.toml").exists() => Config::load(Path::new("proxy.toml")),
        None => {
            tracing::warn!("no proxy.toml here and no --config given; using the built-in defaults");
            Ok(Config::builtin())
        }
    }
}

/// The config every command runs with, `serve` and batch alike: the file
/// (see [`load`]), then the environment, then the flags.
fn configure(path: Option<PathBuf>, overrides: &Overrides) -> Result<Config, ConfigError> {
    load(path).and_then(|mut c| {
        c.apply_overrides(overrides, &|k| std::env::var(k).ok())?;
        Ok(c)
    })
}

fn check_config(path: Option<PathBuf>, redis_url: Option<String>) -> ExitCode {
    let shown = path.clone().unwrap_or_else(|| PathBuf::from("proxy.toml"));
    let overrides = Overrides {
        redis_url,
        ..Overrides::default()
    };
    let result = configure(Some(shown.clone()), &overrides).and_then(|c| {
        c.validate_listeners()?;
        Ok(c)
    });
    match result {
        Ok(c) => {
            println!("{}: ok ({} routes)", shown.display(), c.routes.len());
            ExitCode::SUCCESS
        }
        Err(e) => fail(2, e),
    }
}

fn serve(config: Option<PathBuf>, overrides: Overrides, demo: Option<(String, u64)>) -> ExitCode {
    let config = configure(config, &overrides).and_then(|c| {
        c.validate_listeners()?;
        Ok(c)
    });
    let config = match config {
        Ok(c) => Arc::new(c),
        Err(e) => return fail(2, e),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return fail(1, format!("cannot start the runtime: {e}")),
    };
    runtime.block_on(async move {
        if let Some((addr, think_ms)) = demo {
            let listener = match tokio::net::TcpListener::bind(&addr).await {
                Ok(l) => l,
                Err(e) => return fail(1, format!("demo backend cannot listen on {addr}: {e}")),
            };
            let stats = Arc::new(leafcache::demo::DemoStats::default());
            tokio::spawn(leafcache::demo::serve(
                listener,
                Duration::from_millis(think_ms),
                stats,
            ));
            print_demo_help(&config);
        }
        match leafcache::app::serve(config, leafcache::app::shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e @ leafcache::app::StartError::Config(_)) => fail(2, e),
            Err(e) => fail(1, e),
        }
    })
}

fn print_demo_help(config: &Config) {
    let port = config.listen.port();
    println!(
        "\nleafcache demo: a grocery search backend on {} behind leafcache on port {port}.\n\
         Try, in another terminal (the second request is a HIT):\n\n  \
         curl -si 'http://127.0.0.1:{port}/api/v1/search?q=organic+milk' -H 'x-user-id: alice' | grep -i -e x-cache -e cache-status\n  \
         curl -si 'http://127.0.0.1:{port}/api/v1/search?q=Organic%20%20Milk' -H 'x-user-id: alice' | grep -i -e x-cache -e cache-status\n  \
         curl -si -X POST http://127.0.0.1:{port}/api/v1/search -H 'content-type: application/json' -d '{{\"query\": \"add milk to cart\", \"user_id\": \"alice\"}}' | grep -i x-cache\n\n\
         Press Ctrl-C to stop.\n",
        config.upstream.url
    );
}
