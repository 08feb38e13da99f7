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

    let daily = cluster.zset(&format!("searches:daily:{date}")).await;
    assert_eq!(daily.keys().cloned().collect::<BTreeSet<_>>(), ids);

    // History and profile of one user, in one slot.
    let history = cluster.list("user:{shopper-0}:searches").await;
    assert_eq!(history.len(), 2, "{history:?}");
    assert!(history[0].contains(&hit_id), "newest first: {history:?}");
    let profile = cluster.hash("user:{shopper-0}:profile").await;
    assert_eq!(profile["search_count"], "2");
    assert_eq!(profile["intent:product_search"], "2");
    assert_eq!(
        cluster.ttl("user:{shopper-0}:profile").await,
        -1,
        "never expires"
    );
    assert_eq!(
        cluster.master_of("user:{shopper-0}:searches").await,
        cluster.master_of("user:{shopper-0}:profile").await
    );

    // The counters, summed in process and flushed once a second.
    eventually("the counters of the day", || async {
        let hourly = cluster.hash(&format!("searches:hourly:{date}")).await;
        (hourly.get(&hour).map(String::as_str) == Some("7")).then_some(())
    })
    .await;
    let intents = cluster.hash(&format!("intent:stats:{date}")).await;
    assert_eq!(intents["product_search"], "5");
    assert_eq!(intents["recipe"], "2");
    let cache = cluster.hash(&format!("cache:stats:{date}")).await;
    assert_eq!((cache["hit"].as_str(), cache["miss"].as_str()), ("1", "6"));
    let products = cluster.zset(&format!("products:popular:{date}")).await;
    assert_eq!(products["p1"], 3.0);
    assert_eq!(products["p3"], 2.0);
    assert_eq!(
        cluster.zset(&format!("supplier:s1:queries:{date}")).await["milk"],
        3.0
    );
    assert_eq!(
        cluster.zset(&format!("queries:popular:{date}")).await["pasta"],
        2.0
    );
    assert_eq!(
        cluster.zset(&format!("queries:zero:{date}")).await["nothing"],
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
        cluster.zset(&format!("products:clicked:{date}")).await["p1"],
        1.0
    );
    assert_eq!(
        cluster.zset(&format!("supplier:s1:clicks:{date}")).await["p1"],
        1.0
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
