//! Redis Cluster mode (`redis.cluster = true`) through the real proxy and
//! batch commands, against a real three-master cluster: the cache tier, the
//! search log across slots, purge on every master, the reports, and a master
//! killed under load.

mod common;

use std::collections::BTreeSet;

use common::events::*;
use common::ops::*;
use common::*;
use serde_json::json;

/// The search route in `auto` scope (user entry, then the global one: a
/// two-key lookup across slots), without L1, so every hit comes from Redis.
/// Searches whose records (random ids, so random slots) land on all three
/// masters but with probability 3 x (2/3)^40, about 2e-7 (with 12 it was
/// 2%, and a run of CI met it).
const SEARCHES_FOR_EVERY_MASTER: usize = 40;

fn cache_config() -> ProxyConfig {
    ProxyConfig::new()
        .route(Route::search().scope("auto"))
        .redis("cluster = true")
        .without_l1()
}

fn tagged_user_key(user: &str, hash: &str) -> String {
    format!("user:{{{user}}}:cache:{hash}")
}

#[tokio::test]
async fn hits_come_from_the_cluster_and_users_stay_apart() {
    let cluster = RedisCluster::start().await;
    let backend = Backend::echo().await;
    let proxy = Proxy::start_with(&cache_config(), &backend.url(), &cluster.url()).await;
    let as_user = |user: &str, q: &str| proxy.search(Some(user), json!({"query": q}));

    // Enough users that their entries land on every master.
    let users: Vec<String> = (0..12).map(|i| format!("u{i}")).collect();
    let mut keys = Vec::new();
    for user in &users {
        let first = as_user(user, "milk").send().await;
        assert_miss_stored(&first);
        let key = tagged_user_key(user, &first.key());
        cluster.wait_for_key(&key).await;
        keys.push(key);
    }
    assert_eq!(
        backend.count(),
        users.len(),
        "each user's search reached the backend"
    );
    let masters: BTreeSet<usize> = {
        let mut m = BTreeSet::new();
        for key in &keys {
            m.insert(cluster.master_of(key).await);
        }
        m
    };
    assert_eq!(masters.len(), 3, "user entries spread over every master");

    for user in &users {
        let again = as_user(user, "milk").send().await;
        assert_hit(&again);
        assert_eq!(
            again.json()["user"],
            user.as_str(),
            "a user sees only their own answer"
        );
    }
    assert_eq!(backend.count(), users.len(), "every repeat was a Redis hit");
    assert!(
        cluster.keys("user:u*").await.is_empty(),
        "cluster mode keeps one user's keys under a hash tag"
    );
}

#[tokio::test]
async fn a_public_answer_is_found_under_the_global_key_by_another_user() {
    let cluster = RedisCluster::start().await;
    let backend =
        Backend::start(|req| Reply::echo(req).header("cache-control", "public, max-age=600")).await;
    let proxy = Proxy::start_with(&cache_config(), &backend.url(), &cluster.url()).await;

    let a = proxy
        .search(Some("u-a"), json!({"query": "bread"}))
        .send()
        .await;
    assert_miss_stored(&a);
    cluster.wait_for_key(&global_key(&a.key())).await;
    // u-b's lookup asks for two keys in different slots: its own entry
    // (none) and the global one.
    let b = proxy
        .search(Some("u-b"), json!({"query": "bread"}))
        .send()
        .await;
    assert_hit(&b);
    assert_eq!(backend.count(), 1);
}

/// What the backend answers: products with suppliers, none for "nothing".
fn catalogue(req: &Recorded) -> Reply {
    let q = query_of(req).unwrap_or_default();
    match q.as_str() {
        "nothing" => search_answer(&q, "product_search", 0.2, &[]),
        "milk" => search_answer(&q, "product_search", 0.9, &[("p1", "s1"), ("p2", "s2")]),
        _ => search_answer(&q, "recipe", 0.6, &[("p3", "s3")]),
    }
}

fn log_config() -> ProxyConfig {
    ProxyConfig::search().redis("cluster = true")
}

#[tokio::test]
async fn every_key_of_the_search_log_is_written_across_the_slots() {
    let cluster = RedisCluster::start().await;
    let backend = Backend::start(catalogue).await;
    let proxy = Proxy::start_with(&log_config(), &backend.url(), &cluster.url()).await;

    // Six users, three queries, one repeat (a hit), one search without results.
    let mut ids = BTreeSet::new();
    let mut by_user: Vec<(String, String)> = Vec::new();
    for i in 0..6 {
        let user = format!("shopper-{i}");
        let q = ["milk", "pasta", "nothing"][i % 3];
        let resp = proxy.search(Some(&user), json!({"query": q})).send().await;
        assert_eq!(resp.status, 200, "{resp:?}");
        let id = logged_id(&resp);
        ids.insert(id.clone());
        by_user.push((user, id));
    }
    let hit = proxy
        .search(Some("shopper-0"), json!({"query": "milk"}))
        .send()
        .await;
    assert_hit(&hit);
    let hit_id = logged_id(&hit);
    ids.insert(hit_id.clone());

    // Every record, under its hash tag.
    for id in &ids {
        cluster.wait_for_key(&format!("search:{{{id}}}")).await;
    }
    let record = cluster.hash(&format!("search:{{{hit_id}}}")).await;
    assert_eq!(record["user_id"], "shopper-0");
    assert_eq!(record["cache"], "hit");
    assert_eq!(record["product_ids"], r#"["p1","p2"]"#);
    assert!(cluster.ttl(&format!("search:{{{hit_id}}}")).await > 0);
    let date = record["timestamp"][..10].to_owned();
    let hour = record["timestamp"][11..13].to_owned();

    let daily = cluster.zset(&format!("searches:daily:{{{date}}}")).await;
    assert_eq!(daily.keys().cloned().collect::<BTreeSet<_>>(), ids);
    // A day's keys share the date's slot, so a counter flush is one group.
    let day_master = cluster
        .master_of(&format!("searches:daily:{{{date}}}"))
        .await;

    // History and profile of one user, in one slot.
    let history = cluster.list("user:{shopper-0}:searches").await;
    assert_eq!(history.len(), 2, "{history:?}");
    assert!(history[0].contains(&hit_id), "newest first: {history:?}");
    let profile = cluster.hash("user:{shopper-0}:profile").await;
    assert_eq!(profile["search_count"], "2");
    assert_eq!(profile["intent:product_search"], "2");
    let ttl = cluster.ttl("user:{shopper-0}:profile").await;
    assert!(ttl > 0, "the profile expires with the retention, TTL {ttl}");
    assert_eq!(
        cluster.master_of("user:{shopper-0}:searches").await,
        cluster.master_of("user:{shopper-0}:profile").await
    );

    // The counters, summed in process and flushed once a second.
    eventually("the counters of the day", || async {
        let hourly = cluster.hash(&format!("searches:hourly:{{{date}}}")).await;
        (hourly.get(&hour).map(String::as_str) == Some("7")).then_some(())
    })
    .await;
    let intents = cluster.hash(&format!("intent:stats:{{{date}}}")).await;
    assert_eq!(intents["product_search"], "5");
    assert_eq!(intents["recipe"], "2");
    let cache = cluster.hash(&format!("cache:stats:{{{date}}}")).await;
    assert_eq!((cache["hit"].as_str(), cache["miss"].as_str()), ("1", "6"));
    let products = cluster.zset(&format!("products:popular:{{{date}}}")).await;
    assert_eq!(products["p1"], 3.0);
    assert_eq!(products["p3"], 2.0);
    assert_eq!(
        cluster
            .zset(&format!("supplier:s1:queries:{{{date}}}"))
            .await["milk"],
        3.0
    );
    assert_eq!(
        cluster.zset(&format!("queries:popular:{{{date}}}")).await["pasta"],
        2.0
    );
    assert_eq!(
        cluster.zset(&format!("queries:zero:{{{date}}}")).await["nothing"],
        2.0
    );

    // Feedback: the record and its list share a slot; the rest is by day.
    let click = admin(&proxy, "POST", "/v1/feedback")
        .json(&json!({"search_id": hit_id, "event": "click", "product_id": "p1", "position": 1}))
        .send()
        .await;
    assert_eq!(click.status, 202, "{click:?}");
    assert_eq!(
        cluster.hash(&format!("search:{{{hit_id}}}")).await["clicks"],
        "1"
    );
    let feedback = cluster.list(&format!("search:{{{hit_id}}}:feedback")).await;
    assert_eq!(feedback.len(), 1);
    assert_eq!(
        cluster.zset(&format!("products:clicked:{{{date}}}")).await["p1"],
        1.0
    );
    assert_eq!(
        cluster
            .zset(&format!("supplier:s1:clicks:{{{date}}}"))
            .await["p1"],
        1.0
    );
    for key in cluster.keys(&format!("*{{{date}}}")).await.keys() {
        assert_eq!(cluster.master_of(key).await, day_master, "{key}");
    }
    assert!(
        cluster.keys(&format!("*:{date}")).await.is_empty(),
        "no untagged day key"
    );

    // Manual logging takes the same path.
    let manual = admin(&proxy, "POST", "/v1/searches")
        .json(&json!({"user_id": "shopper-9", "query": "eggs", "results_count": 4}))
        .send()
        .await;
    assert_eq!(manual.status, 202, "{manual:?}");
    let manual_id = manual.json()["search_id"]
        .as_str()
        .expect("an id")
        .to_owned();
    cluster
        .wait_for_key(&format!("search:{{{manual_id}}}"))
        .await;

    assert_eq!(
        cluster.masters_holding("*").await.len(),
        3,
        "the log spreads over every master"
    );
    assert!(
        cluster.keys("search:[^{]*").await.is_empty(),
        "no untagged record"
    );
}

/// Subscribers of the invalidation channel over every node of the cluster.
async fn invalidation_subscribers(cluster: &RedisCluster) -> i64 {
    let mut total = 0;
    for url in cluster.node_urls() {
        let Ok(client) = redis::Client::open(url) else {
            continue;
        };
        let Ok(mut con) = client.get_multiplexed_async_connection().await else {
            continue;
        };
        let counts: Result<(String, i64), _> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg("leafcache:invalidate")
            .query_async(&mut con)
            .await;
        total += counts.map_or(0, |(_, n)| n);
    }
    total
}

async fn set(cluster: &RedisCluster, key: &str) {
    let () = cluster.query(redis::cmd("SET").arg(key).arg("entry")).await;
}

#[tokio::test]
async fn purge_by_user_hash_and_all_global_reaches_every_master_and_every_l1() {
    let cluster = RedisCluster::start().await;
    let backend = Backend::echo().await;
    let a = Proxy::start_with(&log_config(), &backend.url(), &cluster.url()).await;
    let b = Proxy::start_with(&log_config(), &backend.url(), &cluster.url()).await;
    eventually("both proxies subscribed", || async {
        (invalidation_subscribers(&cluster).await >= 2).then_some(())
    })
    .await;

    // An L1 hit in proxy B, which a purge through proxy A must end.
    let milk = b.search(Some("u1"), json!({"query": "milk"}));
    let stored = milk.send().await;
    assert_miss_stored(&stored);
    let milk_key = tagged_user_key("u1", &stored.key());
    cluster.wait_for_key(&milk_key).await;
    assert_hit(&milk.send().await);

    // Entries written straight into the cluster: u1's, a user whose id only
    // starts the same, and 30 global ones, on every master.
    let (h1, h2) = ("a".repeat(64), "b".repeat(64));
    let hashes: Vec<String> = (0..30).map(|i| format!("{i:064x}")).collect();
    for key in [
        tagged_user_key("u1", &h1),
        tagged_user_key("u1", &h2),
        tagged_user_key("u10", &h1),
    ] {
        set(&cluster, &key).await;
    }
    for h in &hashes {
        set(&cluster, &global_key(h)).await;
    }
    assert_eq!(cluster.masters_holding("cache:global:*").await.len(), 3);

    let config = a.config_path();
    let one = run(leafcache(&config, &["purge", "--user", "u1", "--key", &h2])).await;
    assert_eq!(one.code, 0, "{one:?}");
    assert!(!cluster.exists(&tagged_user_key("u1", &h2)).await);
    assert!(
        cluster.exists(&tagged_user_key("u1", &h1)).await,
        "only that entry"
    );

    let user = admin(&a, "POST", "/v1/cache/purge")
        .json(&json!({"user_id": "u1"}))
        .send()
        .await;
    assert_eq!(user.status, 200, "{user:?}");
    assert_eq!(user.json()["removed"], 2, "h1 and the milk entry");
    assert!(!cluster.exists(&milk_key).await);
    assert!(
        cluster.exists(&tagged_user_key("u10", &h1)).await,
        "u10 is another user"
    );
    eventually("proxy B to drop its L1 copy", || async {
        (milk.send().await.x_cache() == Some("MISS")).then_some(())
    })
    .await;

    let global = run(leafcache(&config, &["purge", "--key", &hashes[0]])).await;
    assert_eq!(global.code, 0, "{global:?}");
    assert!(!cluster.exists(&global_key(&hashes[0])).await);

    let all = admin(&a, "POST", "/v1/cache/purge")
        .json(&json!({"all_global": true}))
        .send()
        .await;
    assert_eq!(all.status, 200, "{all:?}");
    assert_eq!(all.json()["removed"], 29, "{all:?}");
    assert!(cluster.keys("cache:global:*").await.is_empty());
    assert!(cluster.exists(&tagged_user_key("u10", &h1)).await);
}

#[tokio::test]
async fn purge_by_product_reaches_every_master_and_every_l1() {
    let cluster = RedisCluster::start().await;
    let backend = Backend::start(catalogue).await;
    let a = Proxy::start_with(&log_config(), &backend.url(), &cluster.url()).await;
    let b = Proxy::start_with(&log_config(), &backend.url(), &cluster.url()).await;
    eventually("both proxies subscribed", || async {
        (invalidation_subscribers(&cluster).await >= 2).then_some(())
    })
    .await;
    // Milk (p1, p2) and pasta (p3) for many users: their entries, and the
    // tag indexes, on every master.
    let users: Vec<String> = (0..24).map(|i| format!("shopper-{i}")).collect();
    let mut milk = Vec::new();
    let mut pasta = Vec::new();
    for user in &users {
        for (q, keys) in [("milk", &mut milk), ("pasta", &mut pasta)] {
            let resp = a.search(Some(user), json!({ "query": q })).send().await;
            assert_miss_stored(&resp);
            keys.push(tagged_user_key(user, &resp.key()));
        }
    }
    for key in milk.iter().chain(&pasta) {
        cluster.wait_for_key(key).await;
    }
    assert_eq!(cluster.masters_holding("user:*:cache:*").await.len(), 3);
    // An L1 copy in proxy B (its own entry: the host is part of the key).
    let b_milk = b.search(Some(&users[0]), json!({"query": "milk"}));
    let resp = b_milk.send().await;
    assert_miss_stored(&resp);
    cluster
        .wait_for_key(&tagged_user_key(&users[0], &resp.key()))
        .await;
    assert_hit(&b_milk.send().await);

    let purge = admin(&a, "POST", "/v1/cache/purge")
        .json(&json!({"product_ids": ["p1"]}))
        .send()
        .await;
    assert_eq!(purge.status, 200, "{purge:?}");
    assert_eq!(
        purge.json()["removed"],
        users.len() + 1,
        "{purge:?}: and B's"
    );
    for key in &milk {
        assert!(!cluster.exists(key).await, "{key} shows p1");
    }
    for key in &pasta {
        assert!(cluster.exists(key).await, "{key} does not");
    }
    eventually("proxy B to drop its L1 copy", || async {
        (b_milk.send().await.x_cache() == Some("MISS")).then_some(())
    })
    .await;

    let soft = run(leafcache(
        &a.config_path(),
        &["purge", "--supplier", "s3", "--soft"],
    ))
    .await;
    assert_eq!(soft.code, 0, "{soft:?}");
    assert!(
        soft.stdout_text()
            .contains(&format!("marked {} ", users.len())),
        "{soft:?}"
    );
    for key in &pasta {
        assert!(cluster.exists(key).await, "{key} is kept, stale");
    }
    // Proxy A's L1 copy is dropped, and Redis has only a stale one.
    let again = eventually("a stale entry refetched", || async {
        let resp = a
            .search(Some(&users[1]), json!({"query": "pasta"}))
            .send()
            .await;
        (resp.x_cache() == Some("MISS")).then_some(resp)
    })
    .await;
    assert_eq!(again.status, 200);
}

#[tokio::test]
async fn export_history_and_stats_read_the_cluster() {
    let cluster = RedisCluster::start().await;
    let backend = Backend::start(catalogue).await;
    let proxy = Proxy::start_with(&log_config(), &backend.url(), &cluster.url()).await;
    let mut ids = BTreeSet::new();
    for i in 0..9 {
        let user = format!("u{}", i % 3);
        let q = ["milk", "pasta", "nothing"][i % 3];
        let resp = proxy.search(Some(&user), json!({"query": q})).send().await;
        ids.insert(logged_id(&resp));
    }
    for id in &ids {
        cluster.wait_for_key(&format!("search:{{{id}}}")).await;
    }
    let first = ids.iter().next().expect("nine ids");
    let date = cluster.hash(&format!("search:{{{first}}}")).await["timestamp"][..10].to_owned();
    let config = proxy.config_path();

    let history = run(leafcache(&config, &["history", "u0", "--json"])).await;
    assert_eq!(history.code, 0, "{history:?}");
    let entries = history.json();
    assert_eq!(entries.as_array().map(Vec::len), Some(3), "{entries}");
    let api = admin(&proxy, "GET", "/v1/users/u0/history").send().await;
    assert_eq!(api.json(), entries, "the API reads the same list");

    let report = stats_when(&proxy, &format!("?date={date}"), |s| {
        s["total_searches"] == 9
    })
    .await;
    assert_eq!(report["intents"]["product_search"], 6);
    assert_eq!(report["zero_result_queries"][0]["query"], "nothing");
    let stats = run(leafcache(&config, &["stats", "--date", &date, "--json"])).await;
    assert_eq!(stats.code, 0, "{stats:?}");
    assert_eq!(stats.json(), report, "the CLI prints the API's report");

    let export = run(leafcache(
        &config,
        &["export", "--from", &date, "--to", &date],
    ))
    .await;
    assert_eq!(export.code, 0, "{export:?}");
    let exported: BTreeSet<String> = lines(&export.stdout)
        .iter()
        .map(|l| l["search_id"].as_str().expect("an id").to_owned())
        .collect();
    assert_eq!(exported, ids);
    let api = admin(&proxy, "GET", &format!("/v1/export?from={date}&to={date}"))
        .send()
        .await;
    assert_eq!(lines(&api.body).len(), ids.len());
}

/// docs/contract.md section 7: the spool is replayed within 30 s of Redis answering.
const REPLAY_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

#[tokio::test]
async fn a_killed_master_costs_no_answer_and_its_events_are_spooled_then_replayed() {
    let mut cluster = RedisCluster::start().await;
    let backend = Backend::start(catalogue).await;
    let proxy = Proxy::start_with(&log_config(), &backend.url(), &cluster.url()).await;
    let search = |i: usize| {
        proxy.search(
            Some(&format!("u{}", i % 7)),
            json!({"query": format!("item {}", i % 5)}),
        )
    };
    let mut first = None;
    for i in 0..10 {
        let resp = search(i).send().await;
        assert_eq!(resp.status, 200);
        first.get_or_insert_with(|| logged_id(&resp));
    }
    let first = first.expect("ten searches");
    cluster.wait_for_key(&format!("search:{{{first}}}")).await;
    let date = cluster.hash(&format!("search:{{{first}}}")).await["timestamp"][..10].to_owned();
    // The seed node if it does not hold the day's counters (they must
    // survive, to be counted exactly once); the proxy gets by on the nodes
    // it learned from the seed.
    let day_master = cluster
        .master_of(&format!("searches:hourly:{{{date}}}"))
        .await;
    let victim = (0..3).find(|&i| i != day_master).expect("three masters");

    cluster.kill(victim);
    let mut outage = BTreeSet::new();
    for i in 10..60 {
        let resp = search(i).send().await;
        assert_eq!(resp.status, 200, "answers never depend on Redis: {resp:?}");
        outage.insert(logged_id(&resp));
    }
    eventually("readyz to say redis: down", || async {
        let ready = admin(&proxy, "GET", "/readyz").send().await;
        (ready.json()["redis"] == "down").then_some(())
    })
    .await;
    eventually("the outage's batches in the spool", || async {
        (metric(proxy.admin, "events_spooled").await > 0).then_some(())
    })
    .await;

    cluster.restart(victim).await;
    eventually_within(
        REPLAY_WAIT,
        "every search of the outage in redis",
        || async {
            for id in &outage {
                if !cluster.exists(&format!("search:{{{id}}}")).await {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    assert_eq!(metric(proxy.admin, "events_dropped").await, 0);
    let mut on_the_killed_master = 0;
    for id in &outage {
        if cluster.master_of(&format!("search:{{{id}}}")).await == victim {
            on_the_killed_master += 1;
        }
    }
    assert!(
        on_the_killed_master > 0,
        "some records belong to the killed master's slots"
    );
    // Every search counted once: none lost, none counted twice by a replay.
    stats_when(&proxy, &format!("?date={date}"), |s| {
        s["total_searches"] == 60
    })
    .await;

    // And Redis serves again: a new search is logged, a repeat is a hit.
    let after = proxy
        .search(Some("late"), json!({"query": "milk"}))
        .send()
        .await;
    assert_eq!(after.status, 200);
    cluster
        .wait_for_key(&format!("search:{{{}}}", logged_id(&after)))
        .await;
    cluster
        .wait_for_key(&tagged_user_key("late", &after.key()))
        .await;
}

#[tokio::test]
async fn invalidation_survives_the_death_of_the_node_it_listened_on() {
    let mut cluster = RedisCluster::start().await;
    let backend = Backend::echo().await;
    let a = Proxy::start_with(&log_config(), &backend.url(), &cluster.url()).await;
    let b = Proxy::start_with(&log_config(), &backend.url(), &cluster.url()).await;
    eventually("both proxies subscribed", || async {
        (invalidation_subscribers(&cluster).await >= 2).then_some(())
    })
    .await;
    let mut listened_on = Vec::new();
    for (i, url) in cluster.node_urls().iter().enumerate() {
        let client = redis::Client::open(url.as_str()).expect("node url");
        let mut con = client
            .get_multiplexed_async_connection()
            .await
            .expect("node");
        let (_, n): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg("leafcache:invalidate")
            .query_async(&mut con)
            .await
            .expect("PUBSUB NUMSUB");
        if n > 0 {
            listened_on.push(i);
        }
    }
    for &i in &listened_on {
        cluster.kill(i);
    }
    for &i in &listened_on {
        cluster.restart(i).await;
    }
    eventually("both proxies subscribed again", || async {
        (invalidation_subscribers(&cluster).await >= 2).then_some(())
    })
    .await;

    let milk = b.search(Some("u1"), json!({"query": "milk"}));
    let stored = milk.send().await;
    assert_eq!(stored.status, 200);
    eventually("proxy B to serve milk from L1", || async {
        (milk.send().await.x_cache() == Some("HIT")).then_some(())
    })
    .await;
    let purge = eventually("a purge once every master answers", || async {
        let resp = admin(&a, "POST", "/v1/cache/purge")
            .json(&json!({"user_id": "u1"}))
            .send()
            .await;
        (resp.status == 200).then_some(resp)
    })
    .await;
    assert!(purge.json()["removed"].as_u64().is_some(), "{purge:?}");
    eventually("proxy B to drop its L1 copy", || async {
        (milk.send().await.x_cache() == Some("MISS")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_proxy_started_before_its_cluster_serves_then_uses_it() {
    let mut cluster = RedisCluster::planned();
    let backend = Backend::start(catalogue).await;
    let proxy = Proxy::start_with(&log_config(), &backend.url(), &cluster.url()).await;
    let early = proxy
        .search(Some("u1"), json!({"query": "milk"}))
        .send()
        .await;
    assert_eq!(early.status, 200, "no Redis yet: {early:?}");
    let early_id = logged_id(&early);

    cluster.create().await;
    // The search made before the cluster existed was spooled and replayed.
    eventually_within(REPLAY_WAIT, "the early search in redis", || async {
        cluster
            .exists(&format!("search:{{{early_id}}}"))
            .await
            .then_some(())
    })
    .await;
    let later = proxy
        .search(Some("u2"), json!({"query": "milk"}))
        .send()
        .await;
    assert_miss_stored(&later);
    cluster
        .wait_for_key(&tagged_user_key("u2", &later.key()))
        .await;
}

#[tokio::test]
async fn an_acl_user_and_password_reach_every_node() {
    let cluster = RedisCluster::start_with_acl_user("admin-secret", "leaf", "leaf-secret").await;
    let backend = Backend::start(catalogue).await;
    let proxy = Proxy::start_process_with(&log_config(), &backend.url(), &cluster.url()).await;
    eventually(
        "the proxy's invalidation listener, logged in as leaf",
        || async { (invalidation_subscribers(&cluster).await >= 1).then_some(()) },
    )
    .await;
    let mut ids = BTreeSet::new();
    for i in 0..SEARCHES_FOR_EVERY_MASTER {
        let resp = proxy
            .search(Some(&format!("u{i}")), json!({"query": "milk"}))
            .send()
            .await;
        assert_miss_stored(&resp);
        ids.insert(logged_id(&resp));
    }
    for id in &ids {
        cluster.wait_for_key(&format!("search:{{{id}}}")).await;
    }
    assert_eq!(cluster.masters_holding("search:*").await.len(), 3);
    let purge = run(leafcache(&proxy.config_path(), &["purge", "--user", "u1"])).await;
    assert_eq!(purge.code, 0, "{purge:?}");
    assert!(
        !proxy.log().contains("redis is unreachable"),
        "{}",
        proxy.log()
    );
}

#[tokio::test]
async fn tls_with_a_private_ca_reaches_every_node() {
    let tls = TestTls::for_localhost();
    let cluster = RedisCluster::start_tls(&tls).await;
    let backend = Backend::start(catalogue).await;
    let dir = tempfile::tempdir().expect("a dir for the CA file");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &tls.ca_pem).expect("write the CA");
    let config = log_config().redis(&format!("tls_ca_file = {:?}", ca.display().to_string()));
    let proxy = Proxy::start_process_with(&config, &backend.url(), &cluster.url()).await;
    let mut ids = BTreeSet::new();
    for i in 0..SEARCHES_FOR_EVERY_MASTER {
        let resp = proxy
            .search(Some(&format!("u{i}")), json!({"query": "milk"}))
            .send()
            .await;
        assert_miss_stored(&resp);
        ids.insert(logged_id(&resp));
    }
    for id in &ids {
        cluster.wait_for_key(&format!("search:{{{id}}}")).await;
    }
    assert_eq!(cluster.masters_holding("search:*").await.len(), 3);
    let purge = run(leafcache(&proxy.config_path(), &["purge", "--user", "u1"])).await;
    assert_eq!(purge.code, 0, "{purge:?}");
    assert!(
        !proxy.log().contains("redis is unreachable"),
        "{}",
        proxy.log()
    );
}

/// An origin route (RFC 9111) in cluster mode: variants of one URI and the
/// URI's key live in different slots; invalidation reaches all of them.
#[tokio::test]
async fn an_origin_route_keeps_variants_and_invalidates_across_the_slots() {
    let cluster = RedisCluster::start().await;
    let backend = Backend::start(|req| {
        if req.method == "POST" {
            return Reply::echo(req).header("location", "/p/b");
        }
        Reply::echo(req)
            .header("cache-control", "max-age=600")
            .header("vary", "accept-language")
    })
    .await;
    let config = ProxyConfig::new()
        .route(
            Route::new("pages")
                .set("path_prefix", r#""/p/""#)
                .set("freshness", r#""origin""#)
                .scope("global"),
        )
        .redis("cluster = true")
        .without_l1();
    let proxy = Proxy::start_with(&config, &backend.url(), &cluster.url()).await;
    let get = |path: &str, lang: &str| proxy.get(path).header("accept-language", lang);
    let uris = [
        ("/p/a", "en"),
        ("/p/a", "fr"),
        ("/p/b", "en"),
        ("/p/b", "fr"),
    ];
    for (path, lang) in uris {
        assert_miss_stored(&get(path, lang).send().await);
    }
    for (path, lang) in uris {
        let hit = eventually("the variant to be a Redis hit", || async {
            let resp = get(path, lang).send().await;
            (resp.x_cache() == Some("HIT")).then_some(resp)
        })
        .await;
        assert_hit(&hit);
    }
    let posted = proxy.post("/p/a").send().await;
    assert_eq!(posted.status, 200);
    for (path, lang) in uris {
        let after = get(path, lang).send().await;
        assert_eq!(after.x_cache(), Some("MISS"), "{path} {lang}: {after:?}");
    }
}
