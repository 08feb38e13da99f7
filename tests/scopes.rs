//! Who may see an entry: user, global and auto scopes (docs/contract.md section 3, steps 4,
//! 6 and 9; section 7, user isolation).

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn user_b_never_sees_user_a_results() {
    let (redis, backend, proxy) = setup(ProxyConfig::search()).await;
    let as_user = |user: &str| proxy.search(Some(user), json!({"query": "milk"}));

    let a = as_user("u-a").send().await;
    assert_miss_stored(&a);
    let b = as_user("u-b").send().await;
    assert_miss_stored(&b);
    assert_eq!(backend.count(), 2, "user b's search reached the backend");
    assert_eq!(b.json()["user"], "u-b");

    let a_again = as_user("u-a").send().await;
    let b_again = as_user("u-b").send().await;
    assert_hit(&a_again);
    assert_hit(&b_again);
    assert_eq!(a_again.json()["user"], "u-a");
    assert_eq!(b_again.json()["user"], "u-b");

    redis.wait_for_key(&user_key("u-a", &a.key())).await;
    redis.wait_for_key(&user_key("u-b", &b.key())).await;
    assert!(
        !redis.exists(&global_key(&a.key())).await,
        "a user-scope answer is not stored globally"
    );
}

#[tokio::test]
async fn user_id_in_the_json_body_separates_users() {
    let (redis, backend, proxy) = setup(ProxyConfig::search()).await;
    let as_user = |user: &str| proxy.search(None, json!({"query": "milk", "user_id": user}));

    let a = as_user("u-a").send().await;
    assert_miss_stored(&a);
    let b = as_user("u-b").send().await;
    assert_miss_stored(&b);
    assert_eq!(backend.count(), 2);
    assert_hit(&as_user("u-a").send().await);
    redis.wait_for_key(&user_key("u-a", &a.key())).await;
    redis.wait_for_key(&user_key("u-b", &b.key())).await;
}

#[tokio::test]
async fn user_scope_without_a_user_id_uses_the_global_scope() {
    let (redis, backend, proxy) = setup(ProxyConfig::search()).await;
    let anonymous = proxy.search(None, json!({"query": "milk"}));

    let first = anonymous.send().await;
    assert_miss_stored(&first);
    redis.wait_for_key(&global_key(&first.key())).await;
    assert_hit(&anonymous.send().await);
    assert_eq!(backend.count(), 1);
}

#[tokio::test]
async fn global_scope_shares_one_entry_between_users() {
    let (redis, backend, proxy) =
        setup(ProxyConfig::new().route(Route::search().scope("global"))).await;

    let a = proxy
        .search(Some("u-a"), json!({"query": "milk"}))
        .send()
        .await;
    assert_miss_stored(&a);
    let b = proxy
        .search(Some("u-b"), json!({"query": "milk"}))
        .send()
        .await;

    assert_hit(&b);
    assert_eq!(b.body, a.body);
    assert_eq!(backend.count(), 1);
    redis.wait_for_key(&global_key(&a.key())).await;
    assert!(redis.keys("user:*:cache:*").await.is_empty());
}

#[tokio::test]
async fn auto_scope_stores_public_answers_globally() {
    let redis = Redis::start().await;
    let backend = Backend::start(|req| Reply::echo(req).header("cache-control", "public")).await;
    let config = ProxyConfig::new().route(Route::search().scope("auto"));
    let proxy = Proxy::start(&config, &backend, &redis).await;

    let a = proxy
        .search(Some("u-a"), json!({"query": "milk"}))
        .send()
        .await;
    assert_miss_stored(&a);
    redis.wait_for_key(&global_key(&a.key())).await;

    let b = proxy
        .search(Some("u-b"), json!({"query": "milk"}))
        .send()
        .await;
    assert_hit(&b);
    assert_eq!(b.body, a.body);
    assert_eq!(backend.count(), 1);
}

#[tokio::test]
async fn auto_scope_keeps_other_answers_per_user() {
    let (redis, backend, proxy) =
        setup(ProxyConfig::new().route(Route::search().scope("auto"))).await;

    let a = proxy
        .search(Some("u-a"), json!({"query": "milk"}))
        .send()
        .await;
    assert_miss_stored(&a);
    redis.wait_for_key(&user_key("u-a", &a.key())).await;

    let b = proxy
        .search(Some("u-b"), json!({"query": "milk"}))
        .send()
        .await;
    assert_miss_stored(&b);
    assert_eq!(b.json()["user"], "u-b");
    assert_eq!(backend.count(), 2);
}

#[tokio::test]
async fn auto_scope_looks_up_the_users_own_entry_before_the_global_one() {
    let redis = Redis::start().await;
    // Only u-b's answer is public, so u-a gets a user entry and u-b a global one.
    let backend = Backend::start(|req| {
        let reply = Reply::echo(req);
        if req.header("x-user-id") == Some("u-b") {
            reply.header("cache-control", "public")
        } else {
            reply
        }
    })
    .await;
    let config = ProxyConfig::new().route(Route::search().scope("auto"));
    let proxy = Proxy::start(&config, &backend, &redis).await;
    let as_user = |user: &str| proxy.search(Some(user), json!({"query": "milk"}));

    let a = as_user("u-a").send().await;
    assert_miss_stored(&a);
    let b = as_user("u-b").send().await;
    assert_miss_stored(&b);
    redis.wait_for_key(&user_key("u-a", &a.key())).await;
    redis.wait_for_key(&global_key(&b.key())).await;

    let a_again = as_user("u-a").send().await;
    assert_hit(&a_again);
    assert_eq!(
        a_again.body, a.body,
        "u-a gets its own entry, not the global one"
    );
    let c = as_user("u-c").send().await;
    assert_hit(&c);
    assert_eq!(
        c.body, b.body,
        "a user without an entry gets the global one"
    );
    assert_eq!(backend.count(), 2);
}

#[tokio::test]
async fn user_id_in_the_query_string_separates_users_without_changing_the_hash() {
    let (redis, backend, proxy) = setup(ProxyConfig::search()).await;
    let as_user = |user: &str| proxy.get(&format!("/api/v1/search?q=milk&user_id={user}"));

    let a = as_user("u-a").send().await;
    assert_miss_stored(&a);
    let b = as_user("u-b").send().await;
    assert_miss_stored(&b);
    assert_eq!(backend.count(), 2, "user b's search reached the backend");
    assert_eq!(
        a.key(),
        b.key(),
        "identity params are left out of the hash; the scope separates users"
    );
    redis.wait_for_key(&user_key("u-a", &a.key())).await;
    redis.wait_for_key(&user_key("u-b", &b.key())).await;
    assert_eq!(as_user("u-b").send().await.body, b.body);
}

#[tokio::test]
async fn the_same_user_id_sent_twice_is_not_ambiguous() {
    let (redis, _backend, proxy) = setup(ProxyConfig::search()).await;
    let resp = proxy
        .search(Some("u1"), json!({"query": "milk"}))
        .header("x-user-id", "u1")
        .send()
        .await;
    assert_miss_stored(&resp);
    redis.wait_for_key(&user_key("u1", &resp.key())).await;
}
