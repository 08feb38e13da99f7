//! The search log under faults (docs/contract.md section 5): logging never delays an
//! answer, and no logged search is lost when Redis pauses, dies, or is down
//! from the start, nor when the proxy is stopped with SIGTERM.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::events::*;
use common::*;
use serde_json::json;

/// Replay happens within ~30 s of Redis answering again (reconnect backoff
/// up to 5 s, replay once a second).
const REPLAY_WAIT: Duration = Duration::from_secs(30);
/// SIGTERM: 10 s of grace for requests in flight, then the queue is flushed.
const EXIT_WAIT: Duration = Duration::from_secs(20);

fn answer(req: &Recorded) -> Reply {
    let q = query_of(req).unwrap_or_default();
    search_answer(&q, "product_search", 0.9, &[("p1", "s1"), ("p2", "s2")])
}

/// `n` searches from `tasks` concurrent clients over 5 users and 40 queries
/// (so some are hits); `answered` counts the answers as they come. Returns
/// every X-Search-Id; each answer must be a logged 200.
async fn burst(
    proxy: &LogProxy,
    n: usize,
    tasks: usize,
    answered: Arc<AtomicUsize>,
) -> Vec<String> {
    let reqs: Vec<Req> = (0..n)
        .map(|i| {
            let user = format!("u{}", i % 5);
            proxy.search(Some(&user), json!({"query": format!("item {}", i % 40)}))
        })
        .collect();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let mine: Vec<Req> = reqs.iter().skip(t).step_by(tasks).cloned().collect();
        let answered = answered.clone();
        handles.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for req in mine {
                let resp = req.send().await;
                assert_eq!(resp.status, 200, "{resp:?}");
                ids.push(logged_id(&resp));
                answered.fetch_add(1, Ordering::SeqCst);
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for h in handles {
        ids.extend(h.await.expect("a client task panicked"));
    }
    ids
}

fn unique(ids: &[String]) -> BTreeSet<String> {
    let set: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(set.len(), ids.len(), "search ids are unique");
    set
}

/// Every member of every `searches:daily:*` zset.
async fn daily_members(store: &mut LogStore) -> BTreeSet<String> {
    let mut members = BTreeSet::new();
    for key in store.scan("searches:daily:*").await {
        members.extend(store.zset(&key).await.into_keys());
    }
    members
}

#[tokio::test]
async fn a_paused_redis_never_delays_an_answer_and_its_events_arrive_after() {
    let redis = Redis::start().await;
    let backend = Backend::start(answer).await;
    let proxy = Proxy::start(&ProxyConfig::search(), &backend, &redis).await;
    let mut store = LogStore::new(&redis.url()).await;
    let milk = proxy.search(Some("u1"), json!({"query": "milk"}));
    let first = milk.send().await;
    assert_miss_stored(&first);
    let first_id = logged_id(&first);
    store
        .wait_for_records("", &BTreeSet::from([first_id.clone()]), WAIT)
        .await;

    let paused = Paused::pause(&redis).await;
    // Bounded by the harness: a logger that waited for Redis would hang here.
    let repeat = milk.send().await;
    assert_hit(&repeat);
    let repeat_id = logged_id(&repeat);
    let bread = proxy
        .search(Some("u1"), json!({"query": "bread"}))
        .send()
        .await;
    assert_eq!(
        bread.status, 200,
        "a miss answered by the backend: {bread:?}"
    );
    let bread_id = logged_id(&bread);
    paused.resume();

    let ids = BTreeSet::from([first_id, repeat_id, bread_id]);
    store.wait_for_records("", &ids, REPLAY_WAIT).await;
    assert_eq!(store.search_ids("").await, ids);
}

#[tokio::test]
async fn every_search_of_a_burst_survives_a_redis_restart() {
    // Durable, so that what was written before the kill is still there and
    // every id can be required.
    let mut redis = DurableRedis::start().await;
    let backend = Backend::start(answer).await;
    let proxy = LogProxy::start(&LogConfig::new(), &backend.url(), &redis.url()).await;

    let answered = Arc::new(AtomicUsize::new(0));
    let clients = burst(&proxy, 300, 6, answered.clone());
    let outage = async {
        eventually("100 answers", || async {
            (answered.load(Ordering::SeqCst) >= 100).then_some(())
        })
        .await;
        redis.kill();
        eventually("200 answers", || async {
            (answered.load(Ordering::SeqCst) >= 200).then_some(())
        })
        .await;
        redis.restart().await;
    };
    let (ids, ()) = tokio::join!(clients, outage);
    let ids = unique(&ids);
    assert_eq!(ids.len(), 300);

    let mut store = LogStore::new(&redis.url()).await;
    store.wait_for_records("", &ids, REPLAY_WAIT).await;
    assert_eq!(
        store.search_ids("").await,
        ids,
        "one record per answered search, no strays"
    );
    assert_eq!(daily_members(&mut store).await, ids, "searches:daily");
    assert!(
        metric(proxy.admin, "events_spooled").await > 0,
        "the outage was felt: some batches went through the spool"
    );
    assert_eq!(metric(proxy.admin, "events_dropped").await, 0);
}

/// Redis holds the writer's transactions for 3 s mid-burst (reads still
/// answer, so the proxy keeps serving at full speed) and the queue holds
/// only 200 events: the backlog goes to the spool instead of overflowing
/// the queue, and every search reaches Redis once it takes writes again.
#[tokio::test]
async fn a_queue_backlog_behind_a_stalled_redis_spills_to_the_spool_and_nothing_is_dropped() {
    let redis = Redis::start().await;
    let backend = Backend::start(answer).await;
    let config = LogConfig::new()
        .events("queue_capacity = 200")
        .events("batch_max = 50");
    let proxy = LogProxy::start(&config, &backend.url(), &redis.url()).await;
    let mut store = LogStore::new(&redis.url()).await;

    let answered = Arc::new(AtomicUsize::new(0));
    let clients = burst(&proxy, 3000, 16, answered.clone());
    let stall = async {
        eventually("300 answers", || async {
            (answered.load(Ordering::SeqCst) >= 300).then_some(())
        })
        .await;
        store.client_pause_writes(3000).await;
    };
    let (ids, ()) = tokio::join!(clients, stall);
    let ids = unique(&ids);
    assert_eq!(ids.len(), 3000);

    store.wait_for_records("", &ids, REPLAY_WAIT).await;
    assert_eq!(store.search_ids("").await, ids, "one record per search");
    assert_eq!(daily_members(&mut store).await, ids, "searches:daily");
    assert_eq!(
        metric(proxy.admin, "events_dropped").await,
        0,
        "a backlog is spooled, not dropped"
    );
    assert!(
        metric(proxy.admin, "events_spooled").await > 0,
        "the stall was felt: the backlog went through the spool"
    );
}

#[tokio::test]
async fn sigterm_right_after_a_burst_exits_0_with_every_search_in_redis() {
    let redis = Redis::start().await;
    let backend = Backend::start(answer).await;
    let mut proxy = LogProxy::start(&LogConfig::new(), &backend.url(), &redis.url()).await;

    let ids = burst(&proxy, 500, 25, Arc::new(AtomicUsize::new(0))).await;
    proxy.terminate();
    let status = proxy.wait_exit(EXIT_WAIT).await;
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");

    let ids = unique(&ids);
    let mut store = LogStore::new(&redis.url()).await;
    store.wait_for_records("", &ids, WAIT).await;
    assert_eq!(store.search_ids("").await, ids);
    assert_eq!(daily_members(&mut store).await, ids, "searches:daily");
}

/// Sends `n` searches through a proxy whose Redis does not exist, stops it
/// with SIGTERM, and returns the ids: all of them now live only in `spool`.
async fn searches_spooled_while_redis_is_down(spool: &std::path::Path, n: usize) -> Vec<String> {
    let backend = Backend::start(answer).await;
    let nowhere = format!("redis://127.0.0.1:{}", free_port());
    // Small batches, so that the spool holds several records.
    let config = LogConfig::new().spool_dir(spool).events("batch_max = 4");
    let mut proxy = LogProxy::start(&config, &backend.url(), &nowhere).await;
    let mut ids = Vec::new();
    for i in 0..n {
        let resp = proxy
            .search(Some("u1"), json!({"query": format!("item {i}")}))
            .send()
            .await;
        assert_eq!(resp.status, 200, "the backend answers: {resp:?}");
        ids.push(logged_id(&resp));
    }
    assert_eq!(backend.count(), n);
    proxy.terminate();
    let status = proxy.wait_exit(EXIT_WAIT).await;
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
    assert!(
        !spool_segments(spool).is_empty(),
        "the queue went to the spool: {:?}",
        std::fs::read_dir(spool).map(|d| d.count())
    );
    ids
}

/// docs/contract.md sections 5 and 7: a full spool does not drop events while the
/// queue has room; they wait, and reach Redis once it answers again.
#[tokio::test]
async fn with_redis_down_and_the_spool_full_events_wait_and_arrive_when_redis_returns() {
    let mut redis = Redis::start().await;
    let backend = Backend::start(answer).await;
    let config = LogConfig::new()
        .events("batch_max = 4")
        .events(r#"spool_max_bytes = "4KiB""#);
    let proxy = LogProxy::start(&config, &backend.url(), &redis.url()).await;
    redis.kill();
    let ids = send_searches(&proxy, 40).await;
    eventually("every event spooled or waiting", || async {
        let spooled = metric(proxy.admin, "events_spooled").await;
        let waiting = metric(proxy.admin, "events_waiting").await;
        (spooled + waiting == 40 && waiting > 0).then_some(())
    })
    .await;
    assert_eq!(
        metric(proxy.admin, "events_dropped").await,
        0,
        "the queue had room"
    );
    assert!(metric(proxy.admin, "spool_bytes").await <= 4096);
    assert_eq!(
        proxy.log().matches("the spool takes no more").count(),
        1,
        "warned once"
    );

    redis.restart().await;
    let mut store = LogStore::new(&redis.url()).await;
    store.wait_for_records("", &ids, REPLAY_WAIT).await;
    assert_eq!(store.search_ids("").await, ids, "every search, once");
    assert_eq!(metric(proxy.admin, "events_dropped").await, 0);
    assert_eq!(metric(proxy.admin, "events_waiting").await, 0);
}

/// docs/contract.md section 5: only when the queue and the spool are both full is an
/// event dropped; each drop is counted, and warned about once per episode.
#[tokio::test]
async fn with_redis_down_and_queue_and_spool_full_events_are_dropped_counted_and_warned_once() {
    let backend = Backend::start(answer).await;
    let nowhere = format!("redis://127.0.0.1:{}", free_port());
    let config = LogConfig::new()
        .events("batch_max = 4")
        .events("queue_capacity = 8")
        .events(r#"spool_max_bytes = "4KiB""#);
    let proxy = LogProxy::start(&config, &backend.url(), &nowhere).await;
    let n = 40;
    send_searches(&proxy, n).await;
    let (spooled, waiting, dropped) =
        eventually("every event spooled, waiting or dropped", || async {
            let spooled = metric(proxy.admin, "events_spooled").await;
            let waiting = metric(proxy.admin, "events_waiting").await;
            let dropped = metric(proxy.admin, "events_dropped").await;
            (spooled + waiting + dropped == n as u64).then_some((spooled, waiting, dropped))
        })
        .await;
    assert!(spooled > 0, "the spool took what fitted");
    // Bounded by the queue's capacity, plus what the writer had taken from
    // the queue (at most as much again) while the sink still counted room.
    assert!(
        waiting <= 2 * 8,
        "what waits in memory is bounded by twice the queue: {waiting}"
    );
    assert!(dropped > 0, "the rest was dropped and counted");
    let warnings = proxy.log().matches("dropping search events").count();
    assert_eq!(warnings, 1, "one warning for the episode: {}", proxy.log());
}

/// A tmpfs of `size` mounted on a fresh folder, unmounted on drop; `None`
/// (with the reason printed) where mounting is not allowed.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().expect("a mount point");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(SmallDisk { dir }),
            Ok(o) => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount: {e}");
                None
            }
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

/// docs/contract.md section 7: a full disk is a full spool. The reported case: on a full
/// disk most events were dropped while the queue had room.
#[tokio::test]
async fn a_full_disk_drops_nothing_while_the_queue_has_room_and_every_search_arrives() {
    let Some(disk) = SmallDisk::mount("64k") else {
        return;
    };
    let spool = disk.dir.path().join("spool");
    let mut redis = Redis::start().await;
    let backend = Backend::start(answer).await;
    let config = LogConfig::new().spool_dir(&spool).events("batch_max = 8");
    let proxy = LogProxy::start(&config, &backend.url(), &redis.url()).await;
    redis.kill();
    let n = 400;
    let ids = send_searches(&proxy, n).await;
    eventually("every event spooled or waiting", || async {
        let spooled = metric(proxy.admin, "events_spooled").await;
        let waiting = metric(proxy.admin, "events_waiting").await;
        (spooled + waiting == n as u64).then_some(())
    })
    .await;
    assert!(
        metric(proxy.admin, "events_waiting").await > 0,
        "the disk filled up: {}",
        proxy.log()
    );
    assert_eq!(
        metric(proxy.admin, "events_dropped").await,
        0,
        "the queue had room"
    );

    redis.restart().await;
    let mut store = LogStore::new(&redis.url()).await;
    store.wait_for_records("", &ids, REPLAY_WAIT).await;
    assert_eq!(store.search_ids("").await, ids, "every search, once");
    assert_eq!(metric(proxy.admin, "events_dropped").await, 0);
}

/// SIGTERM while neither Redis nor the disk takes events: the proxy still
/// exits 0 within its grace, and what it could not keep is counted and said.
#[tokio::test]
async fn sigterm_with_redis_down_and_the_disk_full_exits_0_and_says_what_was_lost() {
    let Some(disk) = SmallDisk::mount("64k") else {
        return;
    };
    let backend = Backend::start(answer).await;
    let nowhere = format!("redis://127.0.0.1:{}", free_port());
    let config = LogConfig::new()
        .spool_dir(&disk.dir.path().join("spool"))
        .events("batch_max = 8");
    let mut proxy = LogProxy::start(&config, &backend.url(), &nowhere).await;
    send_searches(&proxy, 400).await;
    eventually("the disk filled up", || async {
        (metric(proxy.admin, "events_waiting").await > 0).then_some(())
    })
    .await;
    proxy.terminate();
    let status = proxy.wait_exit(EXIT_WAIT).await;
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
    assert!(
        proxy.log().contains("neither the spool nor redis took"),
        "{}",
        proxy.log()
    );
}

/// `n` searches by one user, one after another; their ids.
async fn send_searches(proxy: &LogProxy, n: usize) -> BTreeSet<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let resp = proxy
            .search(Some("u1"), json!({"query": format!("item {i}")}))
            .send()
            .await;
        assert_eq!(resp.status, 200, "answers never wait for the log: {resp:?}");
        ids.push(logged_id(&resp));
    }
    unique(&ids)
}

#[tokio::test]
async fn searches_spooled_while_redis_was_down_are_replayed_at_the_next_start() {
    let spool = tempfile::tempdir().expect("spool dir");
    let in_order = searches_spooled_while_redis_is_down(spool.path(), 20).await;
    let ids = unique(&in_order);

    let redis = Redis::start().await;
    let backend = Backend::start(answer).await;
    let config = LogConfig::new().spool_dir(spool.path());
    let _proxy = LogProxy::start(&config, &backend.url(), &redis.url()).await;
    let mut store = LogStore::new(&redis.url()).await;
    store.wait_for_records("", &ids, REPLAY_WAIT).await;
    assert_eq!(store.search_ids("").await, ids);
    assert_eq!(daily_members(&mut store).await, ids, "searches:daily");
    assert_eq!(backend.count(), 0, "replay does not ask the backend");
    // The spool holds a record per batch of at most 4 searches (and the
    // counters), and replay sends them together, in transactions of at most
    // TRANSACTION_MAX commands: these hold about 150, so two rather than
    // one per record.
    let execs = redis.calls("exec").await;
    assert!(
        (1..=2).contains(&execs),
        "records replayed together: {execs} transactions"
    );
    // docs/contract.md section 5: replayed in order (several records: batch_max = 4).
    let history: Vec<String> = store
        .list("user:u1:searches")
        .await
        .iter()
        .map(|entry| {
            let v: serde_json::Value = serde_json::from_str(entry).expect("a JSON history entry");
            v["search_id"].as_str().expect("a search_id").to_owned()
        })
        .collect();
    let newest_first: Vec<String> = in_order.into_iter().rev().collect();
    assert_eq!(
        history, newest_first,
        "the history reads newest first, as searched"
    );
}

/// docs/contract.md section 5: a replay whose outcome is unknown (Redis holds the
/// transaction past the writer's timeout) is sent again once Redis takes
/// writes, and the searches still arrive once each, in order.
#[tokio::test]
async fn a_replay_redis_does_not_confirm_in_time_is_sent_again() {
    let spool = tempfile::tempdir().expect("spool dir");
    let in_order = searches_spooled_while_redis_is_down(spool.path(), 20).await;
    let ids = unique(&in_order);

    let redis = Redis::start().await;
    let mut store = LogStore::new(&redis.url()).await;
    // Reads (the proxy's health checks) go on; the replay's EXEC waits
    // past the writer's 2 s timeout, and again until the pause ends.
    store.client_pause_writes(5000).await;
    let backend = Backend::start(answer).await;
    let config = LogConfig::new().spool_dir(spool.path());
    let _proxy = LogProxy::start(&config, &backend.url(), &redis.url()).await;
    store.wait_for_records("", &ids, REPLAY_WAIT).await;
    assert_eq!(store.search_ids("").await, ids);
    assert!(
        redis.calls("multi").await >= 2,
        "the first replay was abandoned and sent again"
    );
    let history = store.list("user:u1:searches").await;
    assert_eq!(
        history.len(),
        in_order.len(),
        "an abandoned transaction added nothing"
    );
    assert_eq!(daily_members(&mut store).await, ids, "searches:daily");
}

#[tokio::test]
async fn a_torn_last_spool_record_is_skipped_and_every_record_before_it_replays() {
    let spool = tempfile::tempdir().expect("spool dir");
    let ids = unique(&searches_spooled_while_redis_is_down(spool.path(), 20).await);

    // A crash in the middle of writing the last batch: its record is cut
    // three bytes short, and nothing written after it (the final counter
    // flush) reached the disk.
    let newest = spool_segments(spool.path()).pop().expect("a spool segment");
    let bytes = std::fs::read(&newest).expect("read the newest segment");
    let frames = spool_frames(&bytes);
    let carries = |frame: &SpoolFrame, id: &String| {
        frame.payload.windows(id.len()).any(|w| w == id.as_bytes())
    };
    let torn = frames
        .iter()
        .rev()
        .find(|f| ids.iter().any(|id| carries(f, id)))
        .expect("the newest segment holds a batch of searches");
    let lost: BTreeSet<String> = ids.iter().filter(|id| carries(torn, id)).cloned().collect();
    let kept: BTreeSet<String> = ids.difference(&lost).cloned().collect();
    assert!(!kept.is_empty(), "the spool holds more than one batch");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&newest)
        .and_then(|f| f.set_len((torn.end - 3) as u64))
        .expect("truncate the newest segment");

    let redis = Redis::start().await;
    let backend = Backend::start(answer).await;
    let config = LogConfig::new().spool_dir(spool.path());
    let proxy = LogProxy::start(&config, &backend.url(), &redis.url()).await;
    let mut store = LogStore::new(&redis.url()).await;
    store.wait_for_records("", &kept, REPLAY_WAIT).await;
    // The torn record was the last: once the ones before it are in, replay
    // has gone past it.
    assert_eq!(
        store.search_ids("").await,
        kept,
        "every search but those of the torn batch ({} of them), and nothing else",
        lost.len()
    );

    assert!(
        proxy.is_healthy().await,
        "the proxy survived the torn record"
    );
    let after = proxy
        .search(Some("u1"), json!({"query": "after replay"}))
        .send()
        .await;
    let after_id = logged_id(&after);
    store
        .wait_for_records("", &BTreeSet::from([after_id]), WAIT)
        .await;
}

/// An application key of the wrong type (here a user's history made a
/// string) fails only its own commands: the rest of each batch is written,
/// and the batch is not spooled and sent again forever.
#[tokio::test]
async fn a_key_of_the_wrong_type_costs_only_its_own_commands() {
    let redis = Redis::start().await;
    let backend = Backend::start(answer).await;
    let mut store = LogStore::new(&redis.url()).await;
    store.set("user:u0:searches", "not a list").await;
    let mut proxy = LogProxy::start(&LogConfig::new(), &backend.url(), &redis.url()).await;

    let ids = burst(&proxy, 200, 10, Arc::new(AtomicUsize::new(0))).await;
    let ids = unique(&ids);
    store.wait_for_records("", &ids, WAIT).await;
    proxy.terminate();
    assert_eq!(proxy.wait_exit(EXIT_WAIT).await.code(), Some(0));

    assert_eq!(store.search_ids("").await, ids, "every record was written");
    assert_eq!(daily_members(&mut store).await, ids, "searches:daily");
    assert_eq!(
        store.get("user:u0:searches").await.as_deref(),
        Some("not a list"),
        "the application's key is left as it was"
    );
    assert_eq!(
        store.list("user:u1:searches").await.len(),
        40,
        "other users' histories are written"
    );
    assert!(
        spool_segments(proxy.spool_dir())
            .iter()
            .all(|s| std::fs::metadata(s).map_or(0, |m| m.len()) == 0),
        "nothing was spooled to be sent again"
    );
    assert!(
        proxy.log().contains("WRONGTYPE"),
        "the refusal is logged: {}",
        proxy.log()
    );
}

/// The writer's own connection selects the database the URL names, as the
/// pool does.
#[tokio::test]
async fn events_go_to_the_database_the_url_names() {
    let redis = Redis::start().await;
    let backend = Backend::start(answer).await;
    let url = format!("{}/3", redis.url());
    let proxy = LogProxy::start(&LogConfig::new(), &backend.url(), &url).await;
    let resp = proxy
        .search(Some("u1"), json!({"query": "milk"}))
        .send()
        .await;
    let ids: BTreeSet<String> = [logged_id(&resp)].into();
    let mut db3 = LogStore::new(&url).await;
    db3.wait_for_records("", &ids, WAIT).await;
    assert_eq!(db3.list("user:u1:searches").await.len(), 1);
    let mut db0 = LogStore::new(&redis.url()).await;
    assert!(db0.all_keys().await.is_empty(), "nothing in database 0");
}

/// A `unix://` URL reaches Redis for lookups and for the writer's own
/// connection alike.
#[tokio::test]
async fn events_go_through_a_unix_socket_url() {
    let redis = Redis::start().await;
    let backend = Backend::start(answer).await;
    let proxy = LogProxy::start(&LogConfig::new(), &backend.url(), &redis.unix_url()).await;
    let resp = proxy
        .search(Some("u1"), json!({"query": "milk"}))
        .send()
        .await;
    let ids: BTreeSet<String> = [logged_id(&resp)].into();
    let mut store = LogStore::new(&redis.url()).await;
    store.wait_for_records("", &ids, WAIT).await;
    assert_eq!(store.list("user:u1:searches").await.len(), 1);
    assert_eq!(
        metric(proxy.admin, "events_spooled").await,
        0,
        "written straight to Redis, not through the spool"
    );
}
