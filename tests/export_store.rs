//! `leafcache export` to object stores and in its other formats (docs/contract.md
//! section 10), as a real process against a real Redis and real emulators:
//! moto's S3 server and fake-gcs-server.

mod common;

use std::io::Read;
use std::time::Duration;

use common::emulators::{Cutter, Emulator, FakeGcs, MotoS3};
use common::ops::*;
use common::*;
use serde_json::{Value, json};

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("a gzip stream");
    out
}

/// `leafcache export ARGS` pointed at `store`.
fn export_to(
    config: &std::path::Path,
    store: &impl Emulator,
    args: &[&str],
) -> tokio::process::Command {
    let mut cmd = leafcache(config, args);
    store.point(&mut cmd, store.addr());
    cmd
}

/// The JSONL export of one day on stdout: what every other output must hold.
async fn jsonl_of(config: &std::path::Path, day: &str) -> Vec<u8> {
    let r = run(leafcache(config, &["export", "--from", day, "--to", day])).await;
    assert_eq!(r.code, 0, "{r:?}");
    r.stdout
}

/// `--gzip --daily <scheme>://exports/searches` over `three_days`: one object
/// per day in its date partition, holding what the day's JSONL export
/// holds; after a late search on the first day, a rerun replaces that day's
/// object. The first day, and its object's lines after the rerun.
async fn daily_export_and_a_rerun<E: Emulator>(
    redis: &Redis,
    config: &std::path::Path,
    store: &E,
) -> (String, Vec<Value>) {
    let (from, to, _) = three_days(redis).await;
    let url = format!("{}://exports/searches", E::SCHEME);
    let args = [
        "export", "--from", &from, "--to", &to, "--gzip", "--daily", &url,
    ];
    let r = run(export_to(config, store, &args)).await;
    assert_eq!(r.code, 0, "{r:?}");
    let day1 = format!("searches/date={from}/searches.jsonl.gz");
    let day2 = format!("searches/date={to}/searches.jsonl.gz");
    assert_eq!(
        store.names("exports").await,
        vec![day1.clone(), day2.clone()]
    );
    assert_eq!(
        gunzip(&store.get("exports", &day1).await),
        jsonl_of(config, &from).await
    );
    assert_eq!(lines(&gunzip(&store.get("exports", &day1).await)).len(), 3);
    assert_eq!(
        gunzip(&store.get("exports", &day2).await),
        jsonl_of(config, &to).await
    );

    seed(
        redis,
        &[search_event(
            1_764_028_800_000 + 20 * 3_600_000,
            Some("u9"),
            "late",
            Some("product_search"),
        )],
    )
    .await;
    let r = run(export_to(config, store, &args)).await;
    assert_eq!(r.code, 0, "{r:?}");
    let rerun = lines(&gunzip(&store.get("exports", &day1).await));
    assert_eq!(rerun.len(), 4);
    assert_eq!(rerun[3]["query"], "late");
    assert_eq!(store.names("exports").await.len(), 2, "replaced, not added");
    (from, rerun)
}

#[tokio::test]
async fn daily_export_to_s3_writes_a_gzipped_object_per_day_in_date_partitions_and_a_rerun_replaces_them()
 {
    let redis = Redis::start().await;
    let s3 = MotoS3::start().await;
    s3.bucket("exports").await;
    let dir = tempfile::tempdir().unwrap();
    let config = cli_config(dir.path(), &redis);
    daily_export_and_a_rerun(&redis, &config, &s3).await;
    assert!(s3.pending_uploads("exports").await.is_empty());
}

/// Waits until Redis has served `hits` key lookups (the export's progress,
/// seen from outside).
async fn wait_for_keyspace_hits(redis: &Redis, hits: u64) {
    eventually_within(Duration::from_secs(120), "the export to read", || async {
        let mut con = redis.conn().await;
        let info: String = redis::cmd("INFO")
            .arg("stats")
            .query_async(&mut con)
            .await
            .ok()?;
        let seen: u64 = info
            .lines()
            .find_map(|l| l.strip_prefix("keyspace_hits:"))?
            .trim()
            .parse()
            .ok()?;
        (seen >= hits).then_some(())
    })
    .await;
}

/// Searches enough for ~25 MiB of JSONL on 2025-11-25: three parts and more.
const LARGE: usize = 40_000;
const LARGE_DAY: [&str; 5] = ["export", "--from", "2025-11-25", "--to", "2025-11-25"];

async fn seed_large(redis: &Redis) {
    let start = 1_764_028_800_000; // 2025-11-25T00:00:00Z
    let events: Vec<_> = (0..LARGE)
        .map(|i| {
            search_event(
                start + i as u64,
                Some(&format!("user-{}", i % 97)),
                &format!("query number {i} with some words to make it longer"),
                Some("product_search"),
            )
        })
        .collect();
    seed(redis, &events).await;
}

/// Runs `cmd`, and once it has read two thirds of [`LARGE`], makes Redis
/// refuse every key: the export must fail (exit 1, one line naming Redis)
/// with parts of its object already uploaded.
async fn export_failing_midway(redis: &Redis, mut cmd: tokio::process::Command) {
    let child = cmd.spawn().expect("start leafcache export");
    wait_for_keyspace_hits(redis, (LARGE * 2 / 3) as u64).await;
    let mut con = redis.conn().await;
    let () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("resetkeys")
        .query_async(&mut con)
        .await
        .expect("ACL SETUSER");
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("the export ends")
        .expect("wait for the export");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("redis"), "{stderr}");
}

fn assert_multipart_export(body: &[u8]) {
    assert!(
        body.len() > 2 * (8 << 20),
        "{} bytes: not uploaded in parts",
        body.len()
    );
    let lines = lines(body);
    assert_eq!(lines.len(), LARGE);
    assert_eq!(
        lines[LARGE - 1]["query"],
        format!(
            "query number {} with some words to make it longer",
            LARGE - 1
        )
    );
}

/// A [`LARGE`] export goes up in parts; one that fails midway (Redis refuses
/// keys) leaves no object and the one already there untouched. At warn, an
/// abort the store refused would be a second line of stderr.
async fn large_export_and_one_failing_midway<E: Emulator>(
    redis: &Redis,
    config: &std::path::Path,
    store: &E,
) {
    seed_large(redis).await;
    let mut whole = export_to(config, store, &LARGE_DAY);
    whole.args(["--out", &format!("{}://exports/whole.jsonl", E::SCHEME)]);
    let r = run_within(Duration::from_secs(120), &mut whole).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_multipart_export(&store.get("exports", "whole.jsonl").await);

    let mut cmd = export_to(config, store, &LARGE_DAY);
    cmd.args(["--out", &format!("{}://exports/broken.jsonl", E::SCHEME)])
        .env("RUST_LOG", "warn");
    export_failing_midway(redis, cmd).await;
    assert_eq!(store.names("exports").await, vec!["whole.jsonl".to_owned()]);
}

#[tokio::test]
async fn a_large_export_is_uploaded_in_parts_and_one_that_fails_midway_leaves_no_object() {
    let redis = Redis::start().await;
    let s3 = MotoS3::start().await;
    s3.bucket("exports").await;
    let dir = tempfile::tempdir().unwrap();
    let config = cli_config(dir.path(), &redis);
    large_export_and_one_failing_midway(&redis, &config, &s3).await;
    assert!(
        s3.pending_uploads("exports").await.is_empty(),
        "the multipart upload was aborted"
    );
}

/// The same cut on the way to S3: object_store tries the part again (its
/// retries, 30 s here), the relay carries the retry whole, and the export
/// completes with every search, no upload left pending.
#[tokio::test]
async fn a_connection_cut_in_the_middle_of_an_s3_part_is_retried_and_the_export_completes() {
    let redis = Redis::start().await;
    let s3 = MotoS3::start().await;
    s3.bucket("exports").await;
    // Inside the second 8 MiB part.
    let relay = Cutter::start(s3.addr, 12 << 20).await;
    let dir = tempfile::tempdir().unwrap();
    let config = cli_config(dir.path(), &redis);
    seed_large(&redis).await;

    let mut cmd = export_to(&config, &s3, &LARGE_DAY);
    cmd.args(["--out", "s3://exports/retried.jsonl"]);
    s3.point(&mut cmd, relay.addr);
    let r = run_within(Duration::from_secs(120), &mut cmd).await;
    assert!(relay.cut.load(std::sync::atomic::Ordering::SeqCst), "{r:?}");
    assert_eq!(r.code, 0, "{r:?}");
    assert_multipart_export(&s3.get("exports", "retried.jsonl").await);
    assert!(s3.pending_uploads("exports").await.is_empty());
}

/// Through the resumable upload, the session cancelled on failure.
#[tokio::test]
async fn a_large_export_to_gcs_goes_in_chunks_and_one_that_fails_midway_leaves_no_object() {
    let redis = Redis::start().await;
    let gcs = FakeGcs::start("exports").await;
    let dir = tempfile::tempdir().unwrap();
    let config = cli_config(dir.path(), &redis);
    large_export_and_one_failing_midway(&redis, &config, &gcs).await;
}

#[tokio::test]
async fn bad_urls_are_usage_errors_and_a_store_that_refuses_is_a_runtime_error_naming_the_url() {
    let redis = Redis::start().await;
    let s3 = MotoS3::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = cli_config(dir.path(), &redis);
    let (from, _, _) = three_days(&redis).await;
    let day = ["export", "--from", &from, "--to", &from];
    for (flag, url) in [
        ("--daily", "ftp://host/exports"),
        ("--daily", "gs:///no-bucket"),
        ("--out", "s3://bucket-but-no-object"),
    ] {
        let mut cmd = leafcache(&config, &day);
        cmd.args([flag, url]);
        let r = run(cmd).await;
        assert_eq!(r.code, 2, "{url}: {r:?}");
        assert_eq!(r.stderr.trim().lines().count(), 1, "{r:?}");
        assert!(r.stderr.contains(url), "{r:?}");
    }
    let mut cmd = leafcache(&config, &day);
    cmd.args(["--format", "parquet", "--gzip"]);
    assert_eq!(run(cmd).await.code, 2);

    let mut cmd = export_to(&config, &s3, &day);
    cmd.args(["--gzip", "--daily", "s3://no-such-bucket/searches"]);
    let r = run(cmd).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.stderr.trim().lines().count(), 1, "{r:?}");
    let object = format!("s3://no-such-bucket/searches/date={from}/searches.jsonl.gz");
    assert!(r.stderr.contains(&object), "{r:?}");
}

/// The network fails in the middle of a chunk while the store stays up: the
/// export fails (exit 1, one line naming the object), its session is
/// cancelled (at warn, a refused cancel would be a second line), and no
/// object appears. This is the emulator's path, where a failed chunk fails
/// the export; real Cloud Storage would resume the chunk instead, which no
/// test here can show (the emulator commits what it holds when asked).
#[tokio::test]
async fn a_connection_cut_in_the_middle_of_a_gcs_chunk_fails_the_export_and_leaves_no_object() {
    let redis = Redis::start().await;
    let gcs = FakeGcs::start("exports").await;
    // Inside the second 8 MiB chunk.
    let relay = Cutter::start(gcs.addr, 12 << 20).await;
    let dir = tempfile::tempdir().unwrap();
    let config = cli_config(dir.path(), &redis);
    seed_large(&redis).await;

    let mut cmd = leafcache(&config, &LARGE_DAY);
    cmd.args(["--out", "gs://exports/cut.jsonl"])
        .env("RUST_LOG", "warn");
    gcs.point(&mut cmd, relay.addr);
    let r = run_within(Duration::from_secs(120), &mut cmd).await;
    assert!(relay.cut.load(std::sync::atomic::Ordering::SeqCst), "{r:?}");
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.stderr.trim().lines().count(), 1, "{r:?}");
    assert!(r.stderr.contains("gs://exports/cut.jsonl"), "{r:?}");
    assert!(gcs.names("exports").await.is_empty());
}

/// `gs://` against fake-gcs-server, as users run it (`FakeGcs::point`).
#[tokio::test]
async fn daily_export_to_gcs_writes_partitions_whole_reruns_replace_them_and_parquet_reads_back() {
    let redis = Redis::start().await;
    let gcs = FakeGcs::start("exports").await;
    let dir = tempfile::tempdir().unwrap();
    let config = cli_config(dir.path(), &redis);
    let (from, rerun) = daily_export_and_a_rerun(&redis, &config, &gcs).await;

    // Parquet in the bucket, read back by pyarrow.
    let mut cmd = export_to(&config, &gcs, &["export", "--from", &from, "--to", &from]);
    cmd.args(["--format", "parquet", "--out", "gs://exports/day.parquet"]);
    let r = run(cmd).await;
    assert_eq!(r.code, 0, "{r:?}");
    let file = dir.path().join("day.parquet");
    std::fs::write(&file, gcs.get("exports", "day.parquet").await).unwrap();
    let table = read_with_pyarrow(&file);
    assert_eq!(table["types"]["results_count"], "int64");
    let queries: Vec<&Value> = table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| &row["query"])
        .collect();
    let want: Vec<Value> = rerun.iter().map(|l| l["query"].clone()).collect();
    assert_eq!(queries, want.iter().collect::<Vec<_>>());

    // A bucket that does not exist: exit 1, one line naming the object and
    // the emulator, and nothing written anywhere.
    let mut cmd = export_to(&config, &gcs, &["export", "--from", &from, "--to", &from]);
    cmd.args(["--gzip", "--daily", "gs://no-such-bucket/searches"]);
    let r = run_within(Duration::from_secs(60), &mut cmd).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.stderr.trim().lines().count(), 1, "{r:?}");
    let object = format!("gs://no-such-bucket/searches/date={from}/searches.jsonl.gz");
    assert!(r.stderr.contains(&object), "{r:?}");
    assert!(r.stderr.contains(&gcs.addr.to_string()), "{r:?}");
    assert!(r.stderr.contains("404"), "{r:?}");
    assert_eq!(gcs.names("exports").await.len(), 3);
}

/// A store that does not answer yet (a restart, a network blip) is tried
/// again, for up to 30 s: the export waits for it, then writes the object.
#[tokio::test]
async fn a_gcs_that_answers_late_is_tried_again_until_it_does() {
    use tokio::io::AsyncBufReadExt;
    let redis = Redis::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = cli_config(dir.path(), &redis);
    let (from, _, _) = three_days(&redis).await;
    let port = free_port();
    let mut cmd = leafcache(&config, &["export", "--from", &from, "--to", &from]);
    cmd.args(["--out", "gs://exports/late.jsonl"])
        .env("STORAGE_EMULATOR_HOST", format!("http://127.0.0.1:{port}"))
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("start leafcache export");
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    // The first try found nothing listening: the export says it will try
    // again, and only then does the store come up.
    let notice = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = stderr.next_line().await {
            if line.contains("trying again") {
                return line;
            }
        }
        panic!("the export ended without trying again");
    })
    .await
    .expect("a notice that the export tries again");
    assert!(notice.contains(&format!("127.0.0.1:{port}")), "{notice}");
    let gcs = FakeGcs::start_at("exports", port).await;
    let rest = tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the export ends")
        .expect("wait for the export");
    assert!(status.success(), "{status:?}");
    rest.await.unwrap();
    assert_eq!(
        gcs.get("exports", "late.jsonl").await,
        jsonl_of(&config, &from).await
    );
}

/// What pyarrow sees of a Parquet file: each column's type, and the rows.
fn read_with_pyarrow(file: &std::path::Path) -> Value {
    let script = r#"
import json, sys
try:
    import pyarrow.parquet as pq
except ImportError:
    sys.exit("pyarrow is not installed in the tests' virtualenv")
t = pq.read_table(sys.argv[1])
print(json.dumps({
    "types": {f.name: str(f.type) for f in t.schema},
    "rows": t.to_pylist(),
    "timestamp_ms": [round(d.timestamp() * 1000) for d in t.column("timestamp").to_pylist()],
}, default=str))
"#;
    let out = std::process::Command::new(common::frameworks::python())
        .args(["-c", script])
        .arg(file)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "pyarrow: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("pyarrow's JSON")
}

#[tokio::test]
async fn parquet_export_has_typed_columns_that_pyarrow_reads() {
    let (redis, _backend, proxy, id) = one_logged_search().await;
    let s3 = MotoS3::start().await;
    s3.bucket("exports").await;
    let click = json!({"search_id": id, "event": "click", "product_id": "p1", "position": 3});
    let r = admin(&proxy, "POST", "/v1/feedback")
        .json(&click)
        .send()
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    let today = leafcache::admin::dates::format(leafcache::admin::dates::today());
    let expected = lines(&jsonl_of(&proxy.config_path(), &today).await);
    assert_eq!(expected.len(), 1);

    let mut cmd = export_to(
        &proxy.config_path(),
        &s3,
        &["export", "--from", &today, "--to", &today],
    );
    cmd.args(["--format", "parquet", "--daily", "s3://exports/searches"]);
    let r = run(cmd).await;
    assert_eq!(r.code, 0, "{r:?}");
    let key = format!("searches/date={today}/searches.parquet");
    assert_eq!(s3.keys("exports", "").await, vec![key.clone()]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("searches.parquet");
    std::fs::write(&file, s3.get("exports", &key).await).unwrap();

    let table = read_with_pyarrow(&file);
    let types = &table["types"];
    assert_eq!(types["timestamp"], "timestamp[ms, tz=+00:00]");
    assert_eq!(types["results_count"], "int64");
    assert_eq!(types["confidence"], "double");
    assert_eq!(types["product_ids"], "list<item: string>");
    let map = types["product_suppliers"].as_str().unwrap();
    assert!(map.starts_with("map<string, string"), "{map}");
    assert_eq!(
        types["feedback"],
        "list<item: struct<event: string, product_id: string, position: int64, \
         timestamp: timestamp[ms, tz=+00:00]>>"
    );
    assert_eq!(
        types["impressions"],
        "list<item: struct<product_id: string, position: int64>>"
    );
    let row = &table["rows"][0];
    let want = &expected[0];
    assert_eq!(
        row["impressions"],
        json!([{"product_id": "p1", "position": 1}])
    );
    assert_eq!(row["search_id"], want["search_id"]);
    assert_eq!(row["query"], "milk");
    assert_eq!(row["user_id"], "u1");
    assert_eq!(row["clicks"], 1);
    assert_eq!(row["product_ids"], want["product_ids"]);
    let ts = humantime::parse_rfc3339(want["timestamp"].as_str().unwrap()).unwrap();
    let ms = ts
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert_eq!(
        table["timestamp_ms"][0], ms,
        "the same instant as the JSONL's"
    );
    assert_eq!(row["feedback"][0]["event"], "click");
    assert_eq!(row["feedback"][0]["product_id"], "p1");
    assert_eq!(row["feedback"][0]["position"], 3);
    drop(redis);
}

#[tokio::test]
async fn chat_export_has_one_training_pair_per_search_with_an_intent() {
    let redis = Redis::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = cli_config(dir.path(), &redis);
    let (from, _, _) = three_days(&redis).await;
    seed(
        &redis,
        &[search_event(
            1_764_028_800_000 + 5_000,
            Some("u3"),
            "no intent here",
            None,
        )],
    )
    .await;
    let r = run(leafcache(
        &config,
        &["export", "--from", &from, "--to", &from, "--format", "chat"],
    ))
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("3 training pairs from 4 searches"),
        "{r:?}"
    );
    let pairs = lines(&r.stdout);
    assert_eq!(pairs.len(), 3);
    assert_eq!(
        pairs[1],
        json!({"messages": [
            {"role": "user", "content": "milk"},
            {"role": "assistant", "content": "{\"intent\":\"product_search\",\"confidence\":0.75}"},
        ]})
    );

    // --daily to a local folder: the same partitions as in a bucket.
    let out = dir.path().join("chat");
    let mut cmd = leafcache(
        &config,
        &[
            "export", "--from", &from, "--to", &from, "--format", "chat", "--gzip",
        ],
    );
    cmd.arg("--daily").arg(format!("file://{}", out.display()));
    assert_eq!(run(cmd).await.code, 0);
    let file = std::fs::read(out.join(format!("date={from}/chat.jsonl.gz"))).unwrap();
    assert_eq!(lines(&gunzip(&file)), pairs);
}
