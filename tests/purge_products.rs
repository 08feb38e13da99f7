//! Purge by product and supplier (docs/contract.md sections 1, 6 and 9), through the
//! real binary and the admin API against a real redis-server: exactly the
//! answers that show the product go, in every scope and from the L1 of
//! every proxy sharing the Redis; `--soft` leaves them stale, still served
//! while the backend fails; the tag indexes expire with their entries.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::events::*;
use common::ops::*;
use common::*;
use serde_json::json;

/// A catalogue whose answers name products and suppliers; `failing` makes
/// it answer 503; "seasonal" shows p9 first, p10 after.
fn catalogue(failing: Arc<AtomicBool>) -> impl Fn(&Recorded) -> Reply + Send + Sync + 'static {
    let seasonal = AtomicUsize::new(0);
    move |req| {
        if failing.load(Ordering::SeqCst) {
            return Reply::json(json!({"error": "down"})).status(503);
        }
        let q = query_of(req).unwrap_or_default();
        let products: &[(&str, &str)] = match q.as_str() {
            "milk" => &[("p1", "s1"), ("p2", "s2")],
            "bread" => &[("p2", "s2"), ("p3", "s3")],
            "pasta" => &[("p4", "s3")],
            "seasonal" if seasonal.fetch_add(1, Ordering::SeqCst) == 0 => &[("p9", "s9")],
            "seasonal" => &[("p10", "s9")],
            _ => &[],
        };
        search_answer(&q, "product_search", 0.9, products)
    }
}

/// The user-scope search route and a global-scope catalogue route.
fn config() -> ProxyConfig {
    ProxyConfig::new().route(Route::search()).route(
        Route::search()
            .set("name", r#""catalog""#)
            .set("path", r#""/api/v1/catalog""#)
            .scope("global"),
    )
}

fn catalog(proxy: &Proxy, query: &str) -> Req {
    proxy
        .post("/api/v1/catalog")
        .json(&json!({ "query": query }))
}

/// Sends `req` (a miss that is stored) and waits for its entry in Redis.
async fn stored(redis: &Redis, req: &Req, key: impl Fn(&str) -> String) -> String {
    let resp = req.send().await;
    assert_miss_stored(&resp);
    let key = key(&resp.key());
    redis.wait_for_key(&key).await;
    key
}

async fn members(redis: &Redis, index: &str) -> Vec<String> {
    let mut con = redis.conn().await;
    redis::cmd("ZRANGE")
        .arg(index)
        .arg(0)
        .arg(-1)
        .query_async(&mut con)
        .await
        .expect("ZRANGE")
}

#[tokio::test]
async fn purge_by_product_takes_exactly_the_answers_that_show_it_in_every_scope_and_on_every_proxy()
{
    let redis = Redis::start().await;
    let backend = Backend::start(catalogue(Arc::default())).await;
    let a = Proxy::start(&config(), &backend, &redis).await;
    let b = Proxy::start(&config(), &backend, &redis).await;
    redis.wait_for_invalidation_subscribers(2).await;

    let mut keys: HashMap<String, String> = HashMap::new();
    for q in ["milk", "bread", "pasta", "nothing"] {
        let k = stored(&redis, &a.search(Some("u1"), json!({ "query": q })), |h| {
            user_key("u1", h)
        })
        .await;
        keys.insert(format!("u1 {q}"), k);
    }
    for q in ["milk", "bread", "pasta"] {
        let k = stored(&redis, &catalog(&a, q), global_key).await;
        keys.insert(format!("global {q}"), k);
    }
    let u2_milk = b.search(Some("u2"), json!({"query": "milk"}));
    keys.insert(
        "u2 milk".into(),
        stored(&redis, &u2_milk, |h| user_key("u2", h)).await,
    );
    // L1 copies in proxy B (its own global entries: the host is part of
    // the key), which the purge through the binary must end.
    let b_milk = catalog(&b, "milk");
    keys.insert("b milk".into(), stored(&redis, &b_milk, global_key).await);
    let b_pasta = catalog(&b, "pasta");
    keys.insert("b pasta".into(), stored(&redis, &b_pasta, global_key).await);
    assert_hit(&b_milk.send().await);
    assert_hit(&u2_milk.send().await);
    assert_hit(&b_pasta.send().await);

    // Each answer is filed under its products and suppliers.
    let p2_index = members(&redis, "cache:tag:product:p2").await;
    assert_eq!(p2_index.len(), 6, "{p2_index:?}");
    assert_eq!(
        members(&redis, "cache:tag:supplier:s3").await.len(),
        5,
        "bread and pasta of u1 and in global, pasta of B"
    );

    let purge = run(leafcache(&a.config_path(), &["purge", "--product", "p2"])).await;
    assert_eq!(purge.code, 0, "{purge:?}");
    assert!(purge.stdout_text().contains("removed 6 "), "{purge:?}");
    let p2 = [
        "u1 milk",
        "u1 bread",
        "global milk",
        "global bread",
        "u2 milk",
        "b milk",
    ];
    for shows_p2 in p2 {
        assert!(!redis.exists(&keys[shows_p2]).await, "{shows_p2} shows p2");
    }
    for other in ["u1 pasta", "u1 nothing", "global pasta", "b pasta"] {
        assert!(redis.exists(&keys[other]).await, "{other} does not show p2");
    }
    assert!(members(&redis, "cache:tag:product:p2").await.is_empty());
    eventually("proxy B to drop its L1 copies that show p2", || async {
        (b_milk.send().await.x_cache() == Some("MISS")).then_some(())
    })
    .await;
    assert_eq!(u2_milk.send().await.x_cache(), Some("MISS"));
    assert_hit(&b_pasta.send().await);

    // A purge by supplier through the API, and ids never act as patterns.
    let none = admin(&a, "POST", "/v1/cache/purge")
        .json(&json!({"supplier_ids": ["s*"]}))
        .send()
        .await;
    assert_eq!(none.status, 200, "{none:?}");
    assert_eq!(none.json()["touched"], 0);
    let s3 = admin(&b, "POST", "/v1/cache/purge")
        .json(&json!({"supplier_ids": ["s3"]}))
        .send()
        .await;
    assert_eq!(
        s3.json()["removed"],
        3,
        "{s3:?}: pasta of u1, of A and of B"
    );
    assert!(!redis.exists(&keys["global pasta"]).await);
    assert!(!redis.exists(&keys["b pasta"]).await);
    assert!(redis.exists(&keys["u1 nothing"]).await);
    assert_eq!(b_pasta.send().await.x_cache(), Some("MISS"));

    let bad = admin(&a, "POST", "/v1/cache/purge")
        .json(&json!({"product_ids": []}))
        .send()
        .await;
    assert_eq!(
        (bad.status, bad.json()["field"].clone()),
        (400, json!("product_ids"))
    );
    let both = admin(&a, "POST", "/v1/cache/purge")
        .json(&json!({"product_ids": ["p1"], "user_id": "u1"}))
        .send()
        .await;
    assert_eq!(both.status, 400);
    let usage = run(leafcache(
        &a.config_path(),
        &["purge", "--product", "p1", "--user", "u1"],
    ))
    .await;
    assert_eq!(usage.code, 2, "{usage:?}");
}

#[tokio::test]
async fn an_entry_stored_again_without_the_product_is_not_purged_with_it() {
    let redis = Redis::start().await;
    let backend = Backend::start(catalogue(Arc::default())).await;
    let proxy = Proxy::start(&config().without_l1(), &backend, &redis).await;
    let seasonal = catalog(&proxy, "seasonal");
    let key = stored(&redis, &seasonal, global_key).await;
    let hash = key.trim_start_matches("cache:global:").to_owned();
    let gone = run(leafcache(&proxy.config_path(), &["purge", "--key", &hash])).await;
    assert_eq!(gone.code, 0, "{gone:?}");
    // Stored again, now showing p10: the p9 index still names the key.
    assert_miss_stored(&seasonal.send().await);
    redis.wait_for_key(&key).await;
    eventually("the new answer filed under p10", || async {
        (members(&redis, "cache:tag:product:p10").await == [key.clone()]).then_some(())
    })
    .await;
    assert_eq!(
        members(&redis, "cache:tag:product:p9").await,
        std::slice::from_ref(&key)
    );

    let p9 = run(leafcache(
        &proxy.config_path(),
        &["purge", "--product", "p9"],
    ))
    .await;
    assert_eq!(p9.code, 0, "{p9:?}");
    assert!(p9.stdout_text().contains("removed 0 "), "{p9:?}");
    assert!(redis.exists(&key).await, "the answer no longer shows p9");
    assert!(
        members(&redis, "cache:tag:product:p9").await.is_empty(),
        "the stale index member is dropped"
    );
    assert_hit(&seasonal.send().await);
}

/// `leafcache purge <target> --soft`: it says it marked one entry stale,
/// and `key` is still stored.
async fn soft_purge_marks_one(proxy: &Proxy, redis: &Redis, target: &[&str], key: &str) {
    let mut args = vec!["purge"];
    args.extend_from_slice(target);
    args.push("--soft");
    let soft = run(leafcache(&proxy.config_path(), &args)).await;
    assert_eq!(soft.code, 0, "{soft:?}");
    assert!(soft.stdout_text().contains("marked 1 "), "{soft:?}");
    assert!(redis.exists(key).await, "a soft purge keeps the entry");
}

#[tokio::test]
async fn a_soft_purge_leaves_the_entries_stale_served_while_the_backend_fails() {
    let redis = Redis::start().await;
    let failing = Arc::new(AtomicBool::new(false));
    let backend = Backend::start(catalogue(failing.clone())).await;
    let a = Proxy::start(&config(), &backend, &redis).await;
    let b = Proxy::start(&config(), &backend, &redis).await;
    redis.wait_for_invalidation_subscribers(2).await;
    let milk = catalog(&b, "milk");
    let key = stored(&redis, &milk, global_key).await;
    let pasta = catalog(&b, "pasta");
    let pasta_key = stored(&redis, &pasta, global_key).await;
    assert_hit(&milk.send().await);
    let ttl_before = redis.pttl(&key).await;

    soft_purge_marks_one(&a, &redis, &["--product", "p1"], &key).await;
    let ttl_after = redis.pttl(&key).await;
    assert!(
        ttl_after > 0 && ttl_after <= ttl_before,
        "its expiry is kept: {ttl_before} then {ttl_after}"
    );
    assert_eq!(
        members(&redis, "cache:tag:product:p1").await,
        std::slice::from_ref(&key),
        "a stale entry stays filed, for a later hard purge"
    );

    // Proxy B dropped its L1 copy; Redis has only a stale one: with the
    // backend failing it is served stale, and pasta is still a hit.
    failing.store(true, Ordering::SeqCst);
    let served = eventually("proxy B to serve the soft-purged answer stale", || async {
        let resp = milk.send().await;
        (resp.x_cache() == Some("STALE")).then_some(resp)
    })
    .await;
    assert_eq!(served.status, 200);
    assert_eq!(served.json()["products"][0]["product_id"], "p1");
    assert_hit(&pasta.send().await);
    assert!(redis.exists(&pasta_key).await);

    // Once the backend answers, the next request refetches and stores.
    failing.store(false, Ordering::SeqCst);
    let fresh = milk.send().await;
    assert_eq!(fresh.x_cache(), Some("MISS"), "{fresh:?}");
    eventually("the refetched answer stored", || async {
        (milk.send().await.x_cache() == Some("HIT")).then_some(())
    })
    .await;

    let api = admin(&a, "POST", "/v1/cache/purge")
        .json(&json!({"supplier_ids": ["s3"], "soft": true}))
        .send()
        .await;
    assert_eq!(api.status, 200, "{api:?}");
    assert_eq!(
        (
            api.json()["marked_stale"].clone(),
            api.json()["removed"].clone()
        ),
        (json!(1), json!(0))
    );
}

#[tokio::test]
async fn tag_indexes_expire_with_their_entries() {
    let redis = Redis::start().await;
    let backend = Backend::start(catalogue(Arc::default())).await;
    let config = config()
        .without_l1()
        .cache(r#"ttl = "1s""#)
        .cache(r#"stale_if_error = "0s""#);
    let proxy = Proxy::start(&config, &backend, &redis).await;
    let key = stored(&redis, &catalog(&proxy, "milk"), global_key).await;
    let index = "cache:tag:product:p1";
    eventually("the answer filed under p1", || async {
        (members(&redis, index).await == [key.clone()]).then_some(())
    })
    .await;
    let (entry, tag) = (redis.pttl(&key).await, redis.pttl(index).await);
    assert!(entry > 0 && tag > 0, "both expire: {entry} {tag}");
    assert!(
        (tag - entry).abs() < 500,
        "together: entry {entry} ms, index {tag} ms"
    );
    eventually("the entry and its index gone together", || async {
        (!redis.exists(&key).await && !redis.exists(index).await).then_some(())
    })
    .await;
}

#[tokio::test]
async fn every_purge_takes_soft_a_users_entries_are_marked_stale_and_others_kept() {
    let redis = Redis::start().await;
    let failing = Arc::new(AtomicBool::new(false));
    let backend = Backend::start(catalogue(failing.clone())).await;
    let proxy = Proxy::start(&config(), &backend, &redis).await;
    redis.wait_for_invalidation_subscribers(1).await;
    let milk = proxy.search(Some("u1"), json!({"query": "milk"}));
    let key = stored(&redis, &milk, |h| user_key("u1", h)).await;
    let other = proxy.search(Some("u2"), json!({"query": "milk"}));
    stored(&redis, &other, |h| user_key("u2", h)).await;
    assert_hit(&milk.send().await);

    soft_purge_marks_one(&proxy, &redis, &["--user", "u1"], &key).await;

    failing.store(true, Ordering::SeqCst);
    eventually(
        "u1's answer served stale while the backend fails",
        || async { (milk.send().await.x_cache() == Some("STALE")).then_some(()) },
    )
    .await;
    assert_hit(&other.send().await);
}
