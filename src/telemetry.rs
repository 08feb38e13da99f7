//! Logging: human-readable on a terminal, JSON lines otherwise (for log
//! collectors), level from `RUST_LOG` (default `info`).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = env_filter("info");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if std::io::stderr().is_terminal() {
        builder.try_init()
    } else {
        builder.json().flatten_event(true).try_init()
    };
    // Already initialised (tests that call in twice): keep the first.
    let _ = result;
}

/// `RUST_LOG`, or `default` when it is unset or invalid; either way with
/// redis-rs silenced unless `RUST_LOG` names it. Its cluster client logs
/// every failed reconnect, many a second while a node is down, where
/// leafcache logs one line per change of state.
pub fn env_filter(default: &str) -> EnvFilter {
    let spec = std::env::var("RUST_LOG").unwrap_or_default();
    let names_redis = spec
        .split(',')
        .any(|directive| directive.trim_start().starts_with("redis"));
    let quiet = |base: &str| {
        if names_redis {
            base.to_owned()
        } else {
            format!("{base},redis=off")
        }
    };
    let base = if spec.trim().is_empty() {
        default
    } else {
        &spec
    };
    EnvFilter::try_new(quiet(base))
        .unwrap_or_else(|_| EnvFilter::new(format!("{default},redis=off")))
}
