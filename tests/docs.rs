//! The reference in `docs/` is complete: every config key the parser accepts,
//! every command and long flag of the CLI, and every Prometheus metric is
//! documented. Each list is read from the code at run time, never kept by
//! hand, so a new key, flag or metric fails here until the docs name it:
//!
//! - config keys: the parser's own answer to an unknown key in each table
//!   (serde's "expected one of ..." of `deny_unknown_fields`, renames
//!   included), through `leafcache check-config`;
//! - the CLI: `leafcache --help` and each command's `--help`;
//! - metrics: a live proxy's `/metrics`, in front of a real redis-server.
//!
//! The binary is `LEAFCACHE_BIN` when set (a copy that other builds do not
//! overwrite while this runs), else the one cargo built for this test.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::ops::admin;
use common::*;

fn bin() -> PathBuf {
    std::env::var_os("LEAFCACHE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_leafcache")))
}

fn repo_file(path: &str) -> String {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// Runs the binary; (exit code, stdout, stderr).
fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", bin().display()));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---------------------------------------------------------------- config keys

const PROBE: &str = "zz_not_a_key";

/// The keys the parser accepts in the table that `header` opens ("" for the top
/// level), read from its error for an unknown key; `None` when `header` does
/// not open a table (the name is not one, or not of that kind).
fn accepted_keys(dir: &Path, header: &str) -> Option<Vec<String>> {
    let file = dir.join("probe.toml");
    std::fs::write(&file, format!("{header}\n{PROBE} = 1\n")).unwrap();
    let (code, _, stderr) = run(&["check-config", file.to_str().unwrap()]);
    assert_eq!(code, 2, "an unknown key must be refused: {stderr}");
    let unknown = format!("unknown field `{PROBE}`, expected ");
    let list = &stderr[stderr.find(&unknown)? + unknown.len()..];
    let list = list.lines().next().unwrap_or("");
    let list = list.strip_prefix("one of ").unwrap_or(list);
    let keys: Vec<String> = list
        .split(", ")
        .map(|k| k.trim().trim_matches('`').to_owned())
        .filter(|k| !k.is_empty())
        .collect();
    assert!(!keys.is_empty(), "no keys in {stderr:?}");
    Some(keys)
}

/// Every (section, key) the parser accepts: section "" is the top level,
/// `upstream` a `[upstream]` table, `route` the `[[route]]` array.
fn schema() -> BTreeMap<String, Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    let top = accepted_keys(dir.path(), "").expect("the top level is a table");
    let mut sections = BTreeMap::new();
    let mut scalars = Vec::new();
    for name in top {
        let keys = accepted_keys(dir.path(), &format!("[{name}]"))
            .or_else(|| accepted_keys(dir.path(), &format!("[[{name}]]")));
        match keys {
            Some(keys) => {
                sections.insert(name, keys);
            }
            None => scalars.push(name),
        }
    }
    sections.insert(String::new(), scalars);
    sections
}

/// The heading of a section in docs/configuration.md.
fn doc_heading(section: &str, array: bool) -> String {
    match (section, array) {
        ("", _) => "## Top level".to_owned(),
        (s, true) => format!("## `[[{s}]]`"),
        (s, false) => format!("## `[{s}]`"),
    }
}

/// The part of a Markdown page under `heading`, up to the next heading of
/// the same level or above.
fn under(page: &str, heading: &str) -> Option<String> {
    let mut lines = page.lines().skip_while(|l| l.trim_end() != heading);
    lines.next()?;
    let body: Vec<&str> = lines
        .take_while(|l| !l.starts_with("## ") && !l.starts_with("# "))
        .collect();
    Some(body.join("\n"))
}

/// The keys proxy.toml shows per section, set or commented out.
fn proxy_toml_keys(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            let name = t.split('#').next().unwrap().trim();
            section = name.trim_matches(['[', ']']).to_owned();
            continue;
        }
        let t = t.trim_start_matches('#').trim();
        let Some((key, _)) = t.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            keys.entry(section.clone())
                .or_default()
                .push(key.to_owned());
        }
    }
    keys
}

#[test]
fn every_config_key_is_documented_with_its_default_and_shown_in_proxy_toml() {
    let schema = schema();
    let route_like: Vec<&String> = schema.keys().filter(|s| !s.is_empty()).collect();
    assert!(
        schema
            .get("route")
            .is_some_and(|k| k.contains(&"ttl".to_owned())),
        "the probe must find [[route]]'s keys: {schema:?}"
    );
    assert!(route_like.len() >= 6, "sections found: {route_like:?}");

    let page = repo_file("docs/configuration.md");
    let toml = proxy_toml_keys(&repo_file("proxy.toml"));
    let mut missing = Vec::new();
    for (section, keys) in &schema {
        let heading = doc_heading(section, section == "route");
        let Some(body) = under(&page, &heading) else {
            missing.push(format!("docs/configuration.md has no section {heading:?}"));
            continue;
        };
        for key in keys {
            let name = if section.is_empty() {
                key.clone()
            } else {
                format!("{section}.{key}")
            };
            let row = body
                .lines()
                .find(|l| l.starts_with(&format!("| `{key}` |")));
            match row.map(|r| r.split('|').nth(2).unwrap_or("").trim().to_owned()) {
                None => missing.push(format!("{name}: no row in docs/configuration.md")),
                Some(default) if default.is_empty() => {
                    missing.push(format!("{name}: no default in docs/configuration.md"))
                }
                Some(_) => {}
            }
            if !toml.get(section).is_some_and(|k| k.contains(key)) {
                missing.push(format!("{name}: not shown in proxy.toml"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "undocumented config keys:\n{}",
        missing.join("\n")
    );
}

// ------------------------------------------------------------------------ CLI

/// The commands `--help` lists, `help` aside.
fn commands() -> Vec<String> {
    let (code, help, _) = run(&["--help"]);
    assert_eq!(code, 0);
    let block = help
        .split("Commands:")
        .nth(1)
        .expect("--help lists commands");
    let block = block.split("\n\n").next().unwrap();
    let names: Vec<String> = block
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != "help")
        .map(str::to_owned)
        .collect();
    assert!(names.len() >= 8, "commands: {names:?}");
    names
}

/// The long flags a `--help` text lists in its options.
fn long_flags(help: &str) -> Vec<String> {
    let Some(options) = help.split("Options:").nth(1) else {
        return Vec::new();
    };
    options
        .lines()
        .filter(|l| l.trim_start().starts_with('-'))
        .filter_map(|l| {
            l.split_whitespace()
                .map(|w| w.trim_end_matches(','))
                .find(|w| w.starts_with("--"))
        })
        .filter(|f| *f != "--help" && *f != "--version")
        .map(str::to_owned)
        .collect()
}

/// `flag` as a word of `text`: `--to` is not found in `--top`.
fn names_flag(text: &str, flag: &str) -> bool {
    text.match_indices(flag).any(|(i, _)| {
        let next = text[i + flag.len()..].chars().next();
        !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

#[test]
fn every_cli_command_and_long_flag_is_documented() {
    let ops = repo_file("docs/operations.md");
    let docs = format!("{ops}\n{}", repo_file("README.md"));
    let mut missing = Vec::new();
    let (_, top, _) = run(&["--help"]);
    for flag in long_flags(&top) {
        if !names_flag(&docs, &flag) {
            missing.push(format!("leafcache {flag}"));
        }
    }
    for command in commands() {
        if !ops.lines().any(|l| l.starts_with(&format!("| `{command}"))) {
            missing.push(format!(
                "{command}: no row in docs/operations.md's command table"
            ));
        }
        let (code, help, stderr) = run(&[&command, "--help"]);
        assert_eq!(code, 0, "{command} --help: {stderr}");
        for flag in long_flags(&help) {
            if !names_flag(&docs, &flag) {
                missing.push(format!("leafcache {command} {flag}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "undocumented CLI:\n{}",
        missing.join("\n")
    );
}

// -------------------------------------------------------------------- metrics

/// Metric names as scraped: counters with their `_total`.
fn metric_names(exposition: &str) -> Vec<String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let (name, kind) = (words.next()?, words.next()?);
            Some(match kind {
                "counter" => format!("{name}_total"),
                _ => name.to_owned(),
            })
        })
        .collect()
}

#[tokio::test]
async fn every_prometheus_metric_is_documented() {
    let redis = Redis::start().await;
    let backend = Backend::echo().await;
    let proxy = Proxy::start(&ProxyConfig::search(), &backend, &redis).await;
    let r = admin(&proxy, "GET", "/metrics").send().await;
    assert_eq!(r.status, 200, "{r:?}");
    let names = metric_names(&String::from_utf8_lossy(&r.body));
    assert!(
        names.iter().any(|n| n == "leafcache_events_enqueued_total"),
        "the scrape must include the search log's metrics: {names:?}"
    );
    let ops = repo_file("docs/operations.md");
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with("leafcache_") && !names_flag(&ops, n))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics missing from docs/operations.md: {missing:?}"
    );
}
