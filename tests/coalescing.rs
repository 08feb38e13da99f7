//! Concurrent misses share one backend request; unstorable keys do not queue
//! (docs/contract.md section 3, step 10).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use serde_json::json;

/// Time given to concurrent requests to reach the proxy before the backend is
/// released. Not a synchronisation the assertions rely on: a request that comes
/// later finds the stored entry and still costs no backend request. It only gives
/// a proxy without coalescing the chance to show it by calling the backend twice.
const SETTLE: Duration = Duration::from_millis(300);

async fn join_all(tasks: Vec<tokio::task::JoinHandle<Resp>>) -> Vec<Resp> {
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.expect("request task did not panic"));
    }
    out
}

fn spawn_sends(req: &Req, n: usize) -> Vec<tokio::task::JoinHandle<Resp>> {
    (0..n)
        .map(|_| {
            let req = req.clone();
            tokio::spawn(async move { req.send().await })
        })
        .collect()
}

#[tokio::test]
async fn concurrent_misses_send_one_backend_request() {
    let redis = Redis::start().await;
    let gate = Gate::new();
    let held = gate.clone();
    let backend = Backend::start(move |req| Reply::echo(req).hold_until(&held)).await;
    let proxy = Proxy::start(&ProxyConfig::search(), &backend, &redis).await;
    let milk = proxy.search(Some("u1"), json!({"query": "milk"}));

    let tasks = spawn_sends(&milk, 20);
    backend.wait_for_count(1).await;
    tokio::time::sleep(SETTLE).await;
    gate.open();
    let answers = join_all(tasks).await;

    assert_eq!(
        backend.count(),
        1,
        "twenty concurrent misses, one backend request"
    );
    let leaders: Vec<&Resp> = answers
        .iter()
        .filter(|r| r.x_cache() == Some("MISS") && !r.cache_status().has("collapsed"))
        .collect();
    assert_eq!(leaders.len(), 1, "exactly one request led: {answers:#?}");
    for answer in &answers {
        assert_eq!(answer.status, 200);
        assert_eq!(answer.backend_n(), 1, "everyone got the one backend answer");
        match answer.x_cache() {
            Some("HIT") => {}
            Some("MISS") if answer.cache_status().has("collapsed") => {
                // Whether a waiter's status also says `stored`, and where
                // `collapsed` goes, is left open.
                let cs = answer.cache_status();
                let key = leaders[0].key();
                assert_eq!(
                    cs.without(&["collapsed", "stored"]),
                    format!("leafcache; fwd=uri-miss; key=\"{key}\""),
                    "a coalesced waiter's Cache-Status: {:?}",
                    cs.raw
                );
            }
            Some("MISS") => assert_miss_stored(answer),
            other => panic!("unexpected X-Cache {other:?}: {answer:?}"),
        }
    }
}

#[tokio::test]
async fn waiters_are_answered_when_the_leading_client_hangs_up() {
    let redis = Redis::start().await;
    let gate = Gate::new();
    let held = gate.clone();
    let backend = Backend::start(move |req| Reply::echo(req).hold_until(&held)).await;
    let proxy = Proxy::start(&ProxyConfig::search(), &backend, &redis).await;
    let milk = proxy.search(Some("u1"), json!({"query": "milk"}));

    let leader = milk.send_and_keep_socket().await;
    backend.wait_for_count(1).await;
    let waiters = spawn_sends(&milk, 3);
    tokio::time::sleep(SETTLE).await;
    drop(leader);

    // A waiter may take over with its own backend request, or the proxy may finish
    // the leader's; either way nobody waits for ever once the backend answers.
    let took_over = became_true(Duration::from_secs(3), || backend.count() >= 2).await;
    gate.open();
    let answers = join_all(waiters).await;

    for answer in &answers {
        assert_eq!(answer.status, 200, "{answer:?}");
        assert!(
            matches!(answer.x_cache(), Some("MISS") | Some("HIT")),
            "{answer:?}"
        );
        answer.backend_n();
    }
    // Three waiters: without coalescing there would be four backend requests.
    // One takeover makes two; a third would mean two waiters led at once.
    assert!(
        backend.count() <= 2,
        "the waiters stayed coalesced after the hang-up (took over: {took_over}, \
         backend requests: {})",
        backend.count()
    );
}

/// A backend whose answers are unstorable in global scope (`private`), and which
/// holds them on `gate` while `holding` is set.
async fn private_backend(holding: Arc<AtomicBool>, gate: Gate) -> Backend {
    Backend::start(move |req| {
        let reply = Reply::echo(req).header("cache-control", "private");
        if holding.load(Ordering::SeqCst) {
            reply.hold_until(&gate)
        } else {
            reply
        }
    })
    .await
}

/// Repeats `req` until the proxy says the key is in hit-for-pass.
async fn wait_for_hit_for_pass(req: &Req) {
    eventually("the key to be in hit-for-pass", || async {
        let resp = req.send().await;
        assert_miss_not_stored(&resp);
        (resp.cache_status().get("detail") == Some("hit-for-pass")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn after_an_unstorable_answer_requests_reach_the_backend_concurrently() {
    let redis = Redis::start().await;
    let holding = Arc::new(AtomicBool::new(false));
    let gate = Gate::new();
    let backend = private_backend(holding.clone(), gate.clone()).await;
    let config = ProxyConfig::new().route(Route::search().scope("global"));
    let proxy = Proxy::start(&config, &backend, &redis).await;
    let milk = proxy.search(Some("u1"), json!({"query": "milk"}));

    let first = milk.send().await;
    assert_miss_not_stored(&first);
    wait_for_hit_for_pass(&milk).await;

    holding.store(true, Ordering::SeqCst);
    let tasks = spawn_sends(&milk, 5);
    let concurrent = became_true(Duration::from_secs(5), || backend.inflight() >= 5).await;
    gate.open();
    let answers = join_all(tasks).await;

    assert!(
        concurrent,
        "five requests for a hit-for-pass key were at the backend together \
         (peak concurrency {}): they queued instead",
        backend.peak()
    );
    for answer in &answers {
        assert_eq!(answer.status, 200);
        assert_miss_not_stored(answer);
        assert_eq!(
            answer.cache_status().get("detail"),
            Some("hit-for-pass"),
            "{:?}",
            answer.cache_status().raw
        );
    }
}

#[tokio::test]
async fn a_cart_intent_answer_puts_the_key_in_hit_for_pass() {
    let redis = Redis::start().await;
    let backend = Backend::start(|req| {
        Reply::json(json!({"n": req.n, "intent": "add_to_order", "products": []}))
    })
    .await;
    let proxy = Proxy::start(&ProxyConfig::search(), &backend, &redis).await;
    let milk = proxy.search(Some("u1"), json!({"query": "milk"}));

    assert_miss_not_stored(&milk.send().await);
    wait_for_hit_for_pass(&milk).await;
}

/// docs/contract.md 3: the key is remembered as "pass" only for `hit_for_pass`.
#[tokio::test]
async fn hit_for_pass_lapses_after_its_duration() {
    let redis = Redis::start().await;
    let backend = Backend::start(|req| {
        Reply::json(json!({"n": req.n, "intent": "add_to_order", "products": []}))
    })
    .await;
    let config = ProxyConfig::search().cache(r#"hit_for_pass = "300ms""#);
    let proxy = Proxy::start(&config, &backend, &redis).await;
    let milk = proxy.search(Some("u1"), json!({"query": "milk"}));

    assert_miss_not_stored(&milk.send().await);
    wait_for_hit_for_pass(&milk).await;
    // Waiting out the duration is the behaviour under test (every request
    // in the window would mark the key again).
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = milk.send().await;
    assert_eq!(after.x_cache(), Some("MISS"), "{after:?}");
    assert_ne!(
        after.cache_status().get("detail"),
        Some("hit-for-pass"),
        "the mark lapsed: {:?}",
        after.cache_status().raw
    );
}

#[tokio::test]
async fn a_storable_answer_during_hit_for_pass_is_stored_and_ends_it() {
    let redis = Redis::start().await;
    let unstorable = Arc::new(AtomicBool::new(true));
    let flag = unstorable.clone();
    let backend = Backend::start(move |req| {
        let reply = Reply::echo(req);
        if flag.load(Ordering::SeqCst) {
            reply.header("set-cookie", "sid=1")
        } else {
            reply
        }
    })
    .await;
    let proxy = Proxy::start(&ProxyConfig::search(), &backend, &redis).await;
    let milk = proxy.search(Some("u1"), json!({"query": "milk"}));

    assert_miss_not_stored(&milk.send().await);
    wait_for_hit_for_pass(&milk).await;

    unstorable.store(false, Ordering::SeqCst);
    let stored = milk.send().await;
    assert_eq!(stored.x_cache(), Some("MISS"));
    assert!(
        stored.cache_status().has("stored"),
        "{:?}",
        stored.cache_status().raw
    );

    let hit = milk.send().await;
    assert_hit(&hit);
    assert_eq!(hit.body, stored.body);
}

#[tokio::test]
async fn concurrent_misses_send_one_backend_request_without_l1_too() {
    let redis = Redis::start().await;
    let gate = Gate::new();
    let held = gate.clone();
    let backend = Backend::start(move |req| Reply::echo(req).hold_until(&held)).await;
    let proxy = Proxy::start(&ProxyConfig::search().without_l1(), &backend, &redis).await;
    let milk = proxy.search(Some("u1"), json!({"query": "milk"}));

    let tasks = spawn_sends(&milk, 10);
    backend.wait_for_count(1).await;
    tokio::time::sleep(SETTLE).await;
    gate.open();
    let answers = join_all(tasks).await;

    assert_eq!(
        backend.count(),
        1,
        "ten concurrent misses, one backend request"
    );
    for answer in &answers {
        assert_eq!(answer.status, 200);
        assert_eq!(answer.backend_n(), 1);
    }
}

#[tokio::test]
async fn concurrent_searches_of_two_users_are_never_collapsed_together() {
    let redis = Redis::start().await;
    let gate = Gate::new();
    let held = gate.clone();
    let backend = Backend::start(move |req| Reply::echo(req).hold_until(&held)).await;
    let proxy = Proxy::start(&ProxyConfig::search(), &backend, &redis).await;
    let as_user = |user: &str| proxy.search(Some(user), json!({"query": "milk"}));

    let a = tokio::spawn({
        let req = as_user("u-a");
        async move { req.send().await }
    });
    backend.wait_for_count(1).await;
    let b = tokio::spawn({
        let req = as_user("u-b");
        async move { req.send().await }
    });
    let both_at_backend = became_true(Duration::from_secs(5), || backend.count() >= 2).await;
    gate.open();
    let (a, b) = (a.await.expect("a"), b.await.expect("b"));

    assert!(both_at_backend, "user b's miss waited on user a's request");
    assert_eq!(a.json()["user"], "u-a");
    assert_eq!(b.json()["user"], "u-b", "user b never gets user a's answer");
}

#[tokio::test]
async fn waiters_on_a_private_global_answer_each_get_their_own() {
    let redis = Redis::start().await;
    let gate = Gate::new();
    let held = gate.clone();
    // Global scope and `private`: the leader's answer may not be shared, so each
    // waiter must be sent on to the backend rather than left waiting.
    let backend = Backend::start(move |req| {
        Reply::echo(req)
            .header("cache-control", "private")
            .hold_until(&held)
    })
    .await;
    let config = ProxyConfig::new().route(Route::search().scope("global"));
    let proxy = Proxy::start(&config, &backend, &redis).await;
    // Eight users, one global key: a private answer is never handed to another user.
    let users: Vec<String> = (0..8).map(|i| format!("u{i}")).collect();
    let first = spawn_sends(&proxy.search(Some(&users[0]), json!({"query": "milk"})), 1);
    backend.wait_for_count(1).await;
    let mut tasks = first;
    for user in &users[1..] {
        tasks.extend(spawn_sends(
            &proxy.search(Some(user), json!({"query": "milk"})),
            1,
        ));
    }
    tokio::time::sleep(SETTLE).await;
    gate.open();
    let answers = join_all(tasks).await;

    for (user, answer) in users.iter().zip(&answers) {
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(
            answer.json()["user"],
            user.as_str(),
            "{user} got another's private answer"
        );
        assert_eq!(answer.header("cache-control"), Some("private"));
        assert_eq!(answer.x_cache(), Some("MISS"), "{answer:?}");
        assert!(!answer.cache_status().has("stored"), "{answer:?}");
    }
    assert_eq!(
        backend.count(),
        8,
        "each user's request reached the backend"
    );
    assert!(redis.cache_keys().await.is_empty());
}
