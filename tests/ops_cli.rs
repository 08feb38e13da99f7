//! The batch commands (docs/contract.md section 1) as real processes against a real
//! Redis: export, history, stats, purge and replay.

mod common;

use std::io::Read;
use std::time::Duration;

use common::ops::*;
use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn export_writes_the_same_jsonl_as_the_api_to_a_file_gzipped_or_per_day() {
    let redis = Redis::start().await;
    let backend = Backend::echo().await;
    let proxy = Proxy::start(&ProxyConfig::search(), &backend, &redis).await;
    let (from, to, _) = three_days(&redis).await;
    let api = admin(
        &proxy,
        "GET",
        &format!("/v1/export?from={from}&to={to}&intent=product_search"),
    )
    .send()
    .await;
    assert_eq!(lines(&api.body).len(), 3);

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("export.jsonl");
    let args = [
        "export",
        "--from",
        &from,
        "--to",
        &to,
        "--intent",
        "product_search",
    ];
    let stdout = run(leafcache(&proxy.config_path(), &args)).await;
    assert_eq!(stdout.code, 0, "{stdout:?}");
    assert_eq!(
        stdout.stdout, api.body,
        "stdout by default, same lines as the API"
    );

    let mut cmd = leafcache(&proxy.config_path(), &args);
    cmd.arg("--out").arg(&out);
    assert_eq!(run(cmd).await.code, 0);
    assert_eq!(std::fs::read(&out).unwrap(), api.body);

    let gz = dir.path().join("export.jsonl.gz");
    let mut cmd = leafcache(&proxy.config_path(), &args);
    cmd.arg("--gzip").arg("--out").arg(&gz);
    assert_eq!(run(cmd).await.code, 0);
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&gz).unwrap())
        .read_to_end(&mut unzipped)
        .unwrap();
    assert_eq!(unzipped, api.body);

    let daily = dir.path().join("daily");
    let mut cmd = leafcache(
        &proxy.config_path(),
        &["export", "--from", &from, "--to", &to],
    );
    cmd.arg("--daily").arg(&daily);
    assert_eq!(run(cmd).await.code, 0);
    // Hive partitions, as in a bucket (docs/contract.md section 10).
    let day1 = std::fs::read(daily.join(format!("date={from}/searches.jsonl"))).unwrap();
    let day2 = std::fs::read(daily.join(format!("date={to}/searches.jsonl"))).unwrap();
    let q = |rows: Vec<Value>| rows.iter().map(|r| r["query"].clone()).collect::<Vec<_>>();
    assert_eq!(
        q(lines(&day1)),
        vec![json!("bread"), json!("milk"), json!("add milk")]
    );
    assert_eq!(q(lines(&day2)), vec![json!("eggs")]);
}

#[tokio::test]
async fn export_of_200k_records_stays_under_a_fixed_memory_bound() {
    const RECORDS: usize = 200_000;
    // Lines carry impressions and UBI documents since issue 19 (64 MiB
    // before; measured 64-73 MiB after).
    const BOUND: u64 = 96 << 20;
    let redis = Redis::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = cli_config(dir.path(), &redis);
    let start = 1_764_028_800_000; // 2025-11-25T00:00:00Z
    let events: Vec<_> = (0..RECORDS)
        .map(|i| {
            let ts = start + (i as u64 * 2 * DAY_MS) / RECORDS as u64;
            search_event(
                ts,
                Some(&format!("user-{}", i % 997)),
                &format!("query number {i}"),
                Some("product_search"),
            )
        })
        .collect();
    seed(&redis, &events).await;
    drop(events);

    let out = dir.path().join("all.jsonl");
    let mut cmd = leafcache(
        &config,
        &["export", "--from", "2025-11-25", "--to", "2025-11-26"],
    );
    cmd.arg("--out").arg(&out);
    let mut child = cmd.spawn().expect("start leafcache export");
    let pid = child.id().expect("a running child");
    let mut peak = 0;
    let limit = Duration::from_secs(300);
    let status = tokio::time::timeout(limit, async {
        loop {
            if let Some(rss) = peak_rss(pid) {
                peak = peak.max(rss);
            }
            if let Some(status) = child.try_wait().expect("wait for export") {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("export of {RECORDS} records did not finish within {limit:?}"));
    assert!(status.success(), "{status:?}");
    let file = std::fs::read(&out).unwrap();
    assert_eq!(file.iter().filter(|b| **b == b'\n').count(), RECORDS);
    assert!(peak > 0, "the peak RSS was read");
    assert!(
        peak < BOUND,
        "peak RSS {} MiB, bound {} MiB",
        peak >> 20,
        BOUND >> 20
    );
}

#[tokio::test]
async fn history_and_stats_print_json_with_json_and_tables_otherwise() {
    let redis = Redis::start().await;
    let backend = Backend::echo().await;
    let proxy = Proxy::start(&ProxyConfig::search(), &backend, &redis).await;
    let mut date = String::new();
    for q in ["milk", "bread"] {
        let resp = proxy.search(Some("u1"), json!({"query": q})).send().await;
        assert_miss_stored(&resp);
        let id = logged_search(&redis, &resp).await;
        date = hget(&redis, &format!("search:{id}"), "timestamp")
            .await
            .unwrap()[..10]
            .to_owned();
    }
    eventually("two history entries", || async {
        (lrange(&redis, "user:u1:searches").await.len() == 2).then_some(())
    })
    .await;
    let config = proxy.config_path();
    let history = run(leafcache(&config, &["history", "u1", "--json"])).await;
    assert_eq!(history.code, 0, "{history:?}");
    let queries: Vec<Value> = history
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["query"].clone())
        .collect();
    assert_eq!(queries, vec![json!("bread"), json!("milk")], "newest first");
    let limited = run(leafcache(
        &config,
        &["history", "u1", "--json", "--limit", "1"],
    ))
    .await;
    assert_eq!(limited.json().as_array().unwrap().len(), 1);
    let table = run(leafcache(&config, &["history", "u1"]))
        .await
        .stdout_text();
    assert!(table.starts_with("TIME"), "{table}");
    assert!(table.lines().nth(1).unwrap().contains("bread"), "{table}");

    let api = stats_when(&proxy, &format!("?date={date}"), |s| {
        s["total_searches"] == 2
    })
    .await;
    let stats = run(leafcache(&config, &["stats", "--date", &date, "--json"])).await;
    assert_eq!(stats.code, 0, "{stats:?}");
    assert_eq!(stats.json(), api, "the same report as /v1/stats");
    let page = run(leafcache(&config, &["stats", "--date", &date]))
        .await
        .stdout_text();
    for part in [
        "searches  2",
        "hit ratio",
        "top queries",
        "milk",
        "queries with no results",
    ] {
        assert!(page.contains(part), "{part:?} in\n{page}");
    }
}

#[tokio::test]
async fn purge_user_keeps_users_whose_id_merely_starts_the_same() {
    let redis = Redis::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = cli_config(dir.path(), &redis);
    let h1 = "a".repeat(64);
    let h2 = "b".repeat(64);
    let keys = [
        user_key("u1", &h1),
        user_key("u1", &h2),
        user_key("u10", &h1),
        user_key("u1:cache:x", &h1),
        global_key(&h1),
        global_key(&h2),
    ];
    let mut con = redis.conn().await;
    for k in &keys {
        let () = redis::cmd("SET")
            .arg(k)
            .arg("entry")
            .query_async(&mut con)
            .await
            .unwrap();
    }

    let one = run(leafcache(&config, &["purge", "--user", "u1", "--key", &h2])).await;
    assert_eq!(one.code, 0, "{one:?}");
    assert!(!redis.exists(&keys[1]).await);
    assert!(redis.exists(&keys[0]).await, "only that entry");

    let user = run(leafcache(&config, &["purge", "--user", "u1"])).await;
    assert_eq!(user.code, 0, "{user:?}");
    assert!(!redis.exists(&keys[0]).await);
    assert!(redis.exists(&keys[2]).await, "u10 is another user");
    assert!(redis.exists(&keys[3]).await, "so is u1:cache:x");

    let global = run(leafcache(&config, &["purge", "--key", &h1])).await;
    assert_eq!(global.code, 0);
    assert!(!redis.exists(&keys[4]).await);
    assert!(redis.exists(&keys[5]).await);
    assert!(
        redis.exists(&keys[2]).await,
        "--key alone is the global entry"
    );

    assert_eq!(
        run(leafcache(&config, &["purge", "--all-global"]))
            .await
            .code,
        0
    );
    assert!(!redis.exists(&keys[5]).await);
    assert!(redis.exists(&keys[2]).await);

    for bad in [
        vec!["purge"],
        vec!["purge", "--key", "abc"],
        vec!["purge", "--all-global", "--user", "u"],
    ] {
        let r = run(leafcache(&config, &bad)).await;
        assert_eq!(r.code, 2, "{bad:?}: {r:?}");
    }
}

#[tokio::test]
async fn a_batch_command_fails_with_one_line_and_exit_1_when_redis_is_down() {
    let mut redis = Redis::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = cli_config(dir.path(), &redis);
    redis.kill();
    let r = run(leafcache(&config, &["stats", "--json"])).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.stderr.trim().lines().count(), 1, "{:?}", r.stderr);
    assert!(r.stderr.contains("redis"), "{:?}", r.stderr);
    let usage = run(leafcache(
        &config,
        &["export", "--from", "2025-11-26", "--to", "2025-11-25"],
    ))
    .await;
    assert_eq!(usage.code, 2, "{usage:?}");
}

#[tokio::test]
async fn replay_pushes_spooled_events_into_redis() {
    let redis = Redis::start().await;
    let backend = Backend::echo().await;
    let dead = format!("redis://127.0.0.1:{}", free_port());
    let proxy = Proxy::start_with(&ProxyConfig::search(), &backend.url(), &dead).await;
    let resp = proxy
        .search(Some("u1"), json!({"query": "milk"}))
        .send()
        .await;
    assert_eq!(resp.status, 200);
    let id = resp.header("x-search-id").expect("X-Search-Id").to_owned();
    let spool = proxy.config_path().parent().unwrap().join("spool");
    eventually("the search to be spooled", || async {
        let ready = admin(&proxy, "GET", "/readyz").send().await.json();
        (ready["spool_bytes"].as_u64() > Some(0)).then_some(())
    })
    .await;
    // A copy, so the running proxy's own appends do not race the replay.
    let copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&spool).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
    }
    let config = cli_config(copy.path(), &redis);

    let mut down = leafcache(
        &config,
        &["replay", "--spool", copy.path().to_str().unwrap()],
    );
    down.env("REDIS_URL", &dead);
    let down = run(down).await;
    assert_eq!(down.code, 1, "{down:?}");
    let spool_arg = copy.path().to_str().unwrap();
    let flag_down = run(leafcache(
        &config,
        &["--redis-url", &dead, "replay", "--spool", spool_arg],
    ))
    .await;
    assert_eq!(
        flag_down.code, 1,
        "--redis-url names a dead Redis: {flag_down:?}"
    );

    let r = run(leafcache(
        &config,
        &["replay", "--spool", copy.path().to_str().unwrap()],
    ))
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(redis.exists(&format!("search:{id}")).await, "{r:?}");
    assert_eq!(
        hget(&redis, &format!("search:{id}"), "query")
            .await
            .as_deref(),
        Some("milk")
    );
    let again = run(leafcache(
        &config,
        &["replay", "--spool", copy.path().to_str().unwrap()],
    ))
    .await;
    assert_eq!(again.code, 0);
    assert!(again.stdout_text().contains("empty"), "{again:?}");
}

/// The queries an export printed, in order.
fn exported_queries(r: &CliRun) -> Vec<Value> {
    assert_eq!(r.code, 0, "{r:?}");
    lines(&r.stdout)
        .iter()
        .map(|l| l["query"].clone())
        .collect()
}

#[tokio::test]
async fn batch_commands_take_redis_url_like_serve_flag_over_env_over_file() {
    // The file names one Redis, the flag or REDIS_URL another: each holds
    // different searches on the same day, so the output says which was read.
    let in_file = Redis::start().await;
    let named = Redis::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = cli_config(dir.path(), &in_file);
    let day1 = 1_764_028_800_000; // 2025-11-25T00:00:00Z
    seed(
        &in_file,
        &[search_event(day1 + 5, Some("u9"), "from the file", None)],
    )
    .await;
    let (from, to, _) = three_days(&named).await;
    let named_queries = vec![
        json!("bread"),
        json!("milk"),
        json!("add milk"),
        json!("eggs"),
    ];
    let export = ["export", "--from", from.as_str(), "--to", to.as_str()];

    let file = run(leafcache(&config, &export)).await;
    assert_eq!(exported_queries(&file), vec![json!("from the file")]);

    let mut after = leafcache(&config, &export);
    after.arg("--redis-url").arg(named.url());
    assert_eq!(exported_queries(&run(after).await), named_queries);

    let named_url = named.url();
    let before: Vec<&str> = ["--redis-url", named_url.as_str()]
        .into_iter()
        .chain(export)
        .collect();
    let before = run(leafcache(&config, &before)).await;
    assert_eq!(
        exported_queries(&before),
        named_queries,
        "flag before export"
    );

    let mut env = leafcache(&config, &export);
    env.env("REDIS_URL", named.url());
    assert_eq!(
        exported_queries(&run(env).await),
        named_queries,
        "REDIS_URL"
    );

    let mut both = leafcache(&config, &export);
    both.arg("--redis-url")
        .arg(in_file.url())
        .env("REDIS_URL", named.url());
    assert_eq!(
        exported_queries(&run(both).await),
        vec![json!("from the file")],
        "the flag beats REDIS_URL"
    );
}

#[tokio::test]
async fn every_batch_command_connects_to_the_redis_its_redis_url_names() {
    // The file's Redis is up; the flag names one where nothing listens. A
    // command that took the flag fails at runtime (1), one that ignored it
    // succeeds (0), one that refused it is a usage error (2).
    let redis = Redis::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = cli_config(dir.path(), &redis);
    let dead = format!("redis://127.0.0.1:{}", free_port());
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let reads_redis: [&[&str]; 4] = [
        &["export", "--from", "2025-11-25", "--to", "2025-11-25"],
        &["history", "u1", "--json"],
        &["stats", "--date", "2025-11-25", "--json"],
        &["purge", "--all-global"],
    ];
    // No Redis needed here: the flag is taken and nothing fails.
    let spool = spool.to_str().unwrap();
    let needs_none: [&[&str]; 2] = [
        &["replay", "--spool", spool],
        &["explain", "/api/v1/search?q=milk"],
    ];
    let with_flag = |args: &[&str], before: bool| {
        let mut all: Vec<&str> = args.to_vec();
        let flag = ["--redis-url", dead.as_str()];
        if before {
            all.splice(0..0, flag);
        } else {
            all.extend(flag);
        }
        leafcache(&config, &all)
    };
    for (args, code) in reads_redis
        .iter()
        .map(|a| (a, 1))
        .chain(needs_none.iter().map(|a| (a, 0)))
    {
        assert_eq!(run(leafcache(&config, args)).await.code, 0, "{args:?}");
        for before in [false, true] {
            let r = run(with_flag(args, before)).await;
            assert_eq!(
                r.code, code,
                "{args:?}, --redis-url {dead} before: {before}: {r:?}"
            );
        }
    }
}

#[tokio::test]
async fn every_command_help_gives_an_example() {
    let dir = tempfile::tempdir().unwrap();
    let top = std::process::Command::new(leafcache_bin())
        .arg("--help")
        .output()
        .unwrap();
    let top = String::from_utf8_lossy(&top.stdout).into_owned();
    // The names under "Commands:", so a new command is checked too.
    let names: Vec<&str> = top
        .split("Commands:")
        .nth(1)
        .unwrap_or_else(|| panic!("no Commands: in\n{top}"))
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .collect();
    for expected in [
        "serve", "export", "history", "stats", "purge", "replay", "explain",
    ] {
        assert!(names.contains(&expected), "{expected} in {names:?}");
    }
    for name in names {
        for flag in ["-h", "--help"] {
            let help = std::process::Command::new(leafcache_bin())
                .args([name, flag])
                .current_dir(dir.path())
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&help.stdout);
            assert!(help.status.success(), "{name} {flag}: {help:?}");
            assert!(text.contains("Examples:"), "{name} {flag}:\n{text}");
            assert!(
                text.contains(&format!("leafcache {name}")),
                "{name} {flag}:\n{text}"
            );
        }
    }
}
