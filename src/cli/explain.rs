//! `leafcache explain`: what the proxy would do with a request under this
//! config (route, fields, every key input, the hash, the scope, the bypass
//! decision), without contacting the backend or Redis.

use bytes::Bytes;
use clap::Args;
use serde_json::Value;

use super::Failure;
use crate::config::Config;
use crate::proxy::explain::{ExplainRequest, explain};

#[derive(Args)]
#[command(after_help = "Examples:
  leafcache explain '/api/v1/search?q=organic+milk' -H 'Host: shop.example' -H 'X-User-Id: 42'
  leafcache explain --method POST --data '{\"query\": \"milk\"}' /api/v1/search --json")]
pub struct ExplainArgs {
    /// The request method.
    #[arg(long, default_value = "GET")]
    method: String,
    /// A request header, `Name: value` (repeatable). Send the `Host` the
    /// proxy sees: it is part of the key.
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE", value_parser = header_arg)]
    headers: Vec<(String, String)>,
    /// The request body.
    #[arg(long, value_name = "BODY")]
    data: Option<String>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// The path and query, as the client sends them (`/api/v1/search?q=milk`).
    #[arg(value_name = "PATH_AND_QUERY")]
    target: String,
}

fn header_arg(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not `Name: value`"))?;
    Ok((name.trim().to_owned(), value.trim().to_owned()))
}

pub fn run(config: &Config, args: ExplainArgs) -> Result<(), Failure> {
    let req = ExplainRequest {
        method: args.method,
        target: args.target,
        headers: args.headers,
        body: Bytes::from(args.data.unwrap_or_default()),
    };
    let out = explain(config, &req).map_err(Failure::Usage)?;
    if args.json {
        println!("{out}");
    } else {
        print!("{}", render(&out));
    }
    Ok(())
}

/// The fields in the order a request meets them, then anything else.
const ORDER: [&str; 15] = [
    "request",
    "route",
    "scope",
    "freshness",
    "decision",
    "bypass",
    "error",
    "note",
    "query",
    "query_normalized",
    "identity",
    "key",
    "hash",
    "keys",
    "logged",
];

/// A two-column listing: each leaf by its dotted path, left-aligned.
fn render(out: &Value) -> String {
    let mut rows = Vec::new();
    let fields = out.as_object();
    let rest = fields
        .into_iter()
        .flat_map(|m| m.keys())
        .filter(|k| !ORDER.contains(&k.as_str()));
    for name in ORDER.iter().copied().chain(rest.map(String::as_str)) {
        if let Some(v) = out.get(name) {
            flatten(name, v, &mut rows);
        }
    }
    let width = rows.iter().map(|r| r[0].len()).max().unwrap_or(0);
    rows.iter()
        .map(|r| format!("{:width$}  {}\n", r[0], r[1]))
        .collect()
}

/// One row per leaf of the object, named by its dotted path.
fn flatten(path: &str, value: &Value, rows: &mut Vec<Vec<String>>) {
    let child = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match value {
        Value::Object(map) if !map.is_empty() && path != "key.body" => {
            for (k, v) in map {
                flatten(&child(k), v, rows);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (i, v) in items.iter().enumerate() {
                flatten(&child(&i.to_string()), v, rows);
            }
        }
        Value::String(s) => rows.push(vec![path.to_owned(), s.clone()]),
        other => rows.push(vec![path.to_owned(), other.to_string()]),
    }
}
