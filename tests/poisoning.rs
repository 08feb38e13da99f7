//! Cache poisoning (docs/contract.md section 7): inputs that do not reach the key never
//! change the answer a different key gets, and error answers are never stored.

mod common;

use common::*;
use serde_json::{Value, json};

/// A backend that reflects the headers an attacker would try to smuggle into
/// a stored answer.
async fn reflecting_backend() -> Backend {
    Backend::start(|req| {
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        Reply::json(json!({
            "n": req.n,
            "query": body["query"],
            "user": req.header("x-user-id"),
            "host": req.header("host"),
            "x_forwarded_host": req.header("x-forwarded-host"),
            "x_forwarded_for": req.header("x-forwarded-for"),
            "x_forwarded_proto": req.header("x-forwarded-proto"),
            "x_evil": req.header("x-evil"),
            "intent": "product_search",
            "products": [],
        }))
    })
    .await
}

fn with_evil_headers(req: Req) -> Req {
    req.header("host", "evil.example")
        .header("x-forwarded-host", "evil.example")
        .header("x-evil", "pwned")
}

#[track_caller]
fn assert_not_poisoned(resp: &Resp) {
    assert_eq!(resp.status, 200, "{resp:?}");
    let body = String::from_utf8_lossy(&resp.body);
    assert!(
        !body.contains("evil.example") && !body.contains("pwned"),
        "an answer carries A's input: {body}"
    );
}

#[tokio::test]
async fn unkeyed_headers_from_one_user_never_reach_another_keys_answer() {
    let redis = Redis::start().await;
    let backend = reflecting_backend().await;
    let proxy = Proxy::start(&ProxyConfig::search(), &backend, &redis).await;

    let poisoned = with_evil_headers(proxy.search(Some("u-a"), json!({"query": "milk"})))
        .send()
        .await;
    assert_miss_stored(&poisoned);
    assert_eq!(
        poisoned.json()["x_evil"],
        "pwned",
        "the backend reflects the header"
    );
    redis.wait_for_key(&user_key("u-a", &poisoned.key())).await;

    // Another user, same query: another key (user scope).
    let other_user = proxy
        .search(Some("u-b"), json!({"query": "milk"}))
        .send()
        .await;
    assert_miss_stored(&other_user);
    assert_not_poisoned(&other_user);
    // The same user, another query: another key.
    let other_query = proxy
        .search(Some("u-a"), json!({"query": "bread"}))
        .send()
        .await;
    assert_miss_stored(&other_query);
    assert_not_poisoned(&other_query);
    // And both are served from the cache unpoisoned, too.
    for (user, query) in [("u-b", "milk"), ("u-a", "bread")] {
        let again = proxy
            .search(Some(user), json!({"query": query}))
            .send()
            .await;
        assert_hit(&again);
        assert_not_poisoned(&again);
    }
}

#[tokio::test]
async fn unkeyed_headers_never_reach_another_key_in_the_global_scope() {
    let redis = Redis::start().await;
    let backend = reflecting_backend().await;
    let config = ProxyConfig::new().route(Route::search().scope("global"));
    let proxy = Proxy::start(&config, &backend, &redis).await;

    let poisoned = with_evil_headers(proxy.search(None, json!({"query": "milk"})))
        .send()
        .await;
    assert_miss_stored(&poisoned);
    redis.wait_for_key(&global_key(&poisoned.key())).await;

    for query in ["bread", "eggs"] {
        let clean = proxy.search(None, json!({"query": query})).send().await;
        assert_ne!(clean.key(), poisoned.key());
        assert_not_poisoned(&clean);
    }
}

#[tokio::test]
async fn client_sent_forwarded_headers_are_not_what_the_backend_sees() {
    let redis = Redis::start().await;
    let backend = reflecting_backend().await;
    let proxy = Proxy::start(&ProxyConfig::search(), &backend, &redis).await;

    let resp = proxy
        .search(Some("u-a"), json!({"query": "milk"}))
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-host", "evil.example")
        .header("x-forwarded-proto", "gopher")
        .send()
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let seen = backend.last();
    assert_eq!(seen.header_all("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(
        seen.header_all("x-forwarded-host"),
        [proxy.addr.to_string().as_str()]
    );
    assert_eq!(seen.header_all("x-forwarded-proto"), ["http"]);
    assert_eq!(seen.header("host"), Some(backend.authority().as_str()));
}

#[tokio::test]
async fn client_sent_forwarded_headers_are_kept_only_when_trusted() {
    let redis = Redis::start().await;
    let backend = reflecting_backend().await;
    let config = ProxyConfig::search().top("trust_forwarded = true");
    let proxy = Proxy::start(&config, &backend, &redis).await;

    proxy
        .search(Some("u-a"), json!({"query": "milk"}))
        .header("x-forwarded-for", "203.0.113.7")
        .send()
        .await;
    assert_eq!(
        backend.last().header_all("x-forwarded-for"),
        ["203.0.113.7, 127.0.0.1"]
    );
}

/// Sends `req` twice; both answer `status` without being stored.
async fn assert_error_never_stored(redis: &Redis, req: &Req, status: u16) -> [Resp; 2] {
    let first = req.send().await;
    let second = req.send().await;
    for resp in [&first, &second] {
        assert_eq!(resp.status, status, "{resp:?}");
        assert_ne!(resp.x_cache(), Some("HIT"), "{resp:?}");
        assert_ne!(resp.x_cache(), Some("STALE"), "{resp:?}");
    }
    assert!(
        redis.cache_keys().await.is_empty(),
        "an error answer was stored: {:?}",
        redis.cache_keys().await
    );
    [first, second]
}

#[tokio::test]
async fn backend_error_statuses_are_never_stored() {
    for status in [500, 502, 504] {
        let redis = Redis::start().await;
        let backend = Backend::start(move |req| Reply::echo(req).status(status)).await;
        let proxy = Proxy::start(&ProxyConfig::search(), &backend, &redis).await;
        let req = proxy.search(Some("u-a"), json!({"query": "milk"}));

        let [_, second] = assert_error_never_stored(&redis, &req, status).await;
        assert_eq!(
            backend.count(),
            2,
            "status {status}: the later request reached the backend"
        );
        assert_eq!(second.backend_n(), 2);
    }
}

#[tokio::test]
async fn a_502_for_an_unreachable_backend_is_never_stored() {
    let redis = Redis::start().await;
    let closed = format!("http://127.0.0.1:{}", free_port());
    let proxy = Proxy::start_with(&ProxyConfig::search(), &closed, &redis.url()).await;
    let req = proxy.search(Some("u-a"), json!({"query": "milk"}));

    assert_error_never_stored(&redis, &req, 502).await;
}

#[tokio::test]
async fn a_504_for_a_slow_backend_is_never_stored() {
    let redis = Redis::start().await;
    let never = Gate::new();
    let held = never.clone();
    let backend = Backend::start(move |req| Reply::echo(req).hold_until(&held)).await;
    let config = ProxyConfig::search().upstream(r#"timeout = "300ms""#);
    let proxy = Proxy::start(&config, &backend, &redis).await;
    let req = proxy.search(Some("u-a"), json!({"query": "milk"}));

    assert_error_never_stored(&redis, &req, 504).await;
    assert_eq!(backend.count(), 2, "the later request reached the backend");
    never.open();
    // Once the backend answers again, the answer is its own, not a stored error.
    let fresh = req.send().await;
    assert_miss_stored(&fresh);
    assert_eq!(fresh.backend_n(), 3);
}

/// Normalization (docs/keys-and-security.md, "Security model"): the key holds
/// the normalized search text while the backend reads the text as sent, so
/// another spelling may be answered from the normal entry but its own
/// answer is never stored there.
#[tokio::test]
async fn another_spelling_is_answered_from_the_shared_entry_but_never_fills_it() {
    let redis = Redis::start().await;
    let backend = reflecting_backend().await;
    let config = ProxyConfig::new().route(Route::search().scope("global"));
    let proxy = Proxy::start_process(&config, &backend, &redis).await;
    let ask = |q: &str| proxy.search(None, json!({"query": q}));

    // The attacker spells it fullwidth first: served, never stored.
    let attack = ask("ｙｏｇｈｕｒｔ").send().await;
    assert_miss_not_stored(&attack);
    assert_eq!(attack.json()["query"], "ｙｏｇｈｕｒｔ");
    let victim = ask("yoghurt").send().await;
    assert_miss_stored(&victim);
    assert_eq!(victim.json()["query"], "yoghurt");
    // Now every spelling is answered from the entry the normal text filled.
    for spelling in ["ｙｏｇｈｕｒｔ", "YOGHURT", "  yoghurt ", "yoghurt"] {
        let resp = ask(spelling).send().await;
        assert_hit(&resp);
        assert_eq!(resp.json()["query"], "yoghurt", "{spelling:?}");
    }
}

#[tokio::test]
async fn no_cache_with_another_spelling_never_replaces_a_live_entry() {
    let redis = Redis::start().await;
    let backend = reflecting_backend().await;
    // `auto`: its global entries are shared too.
    for scope in ["global", "auto"] {
        let config = ProxyConfig::new().route(Route::search().scope(scope));
        let proxy = Proxy::start_process(&config, &backend, &redis).await;
        let query = format!("cheese {scope}");
        let first = proxy.search(None, json!({"query": query})).send().await;
        assert_miss_stored(&first);
        let refresh = proxy
            .search(
                None,
                json!({"query": format!("{}  ", query.to_uppercase())}),
            )
            .header("cache-control", "no-cache")
            .send()
            .await;
        assert_eq!(refresh.x_cache(), Some("MISS"), "{refresh:?}");
        assert!(!refresh.cache_status().has("stored"), "{refresh:?}");
        let after = proxy.search(None, json!({"query": query})).send().await;
        assert_hit(&after);
        assert_eq!(after.json()["n"], first.json()["n"], "{scope}: replaced");
        assert_eq!(after.json()["query"], query.as_str());
        // The normal spelling's no-cache still refreshes it.
        let renewed = proxy
            .search(None, json!({"query": query}))
            .header("cache-control", "no-cache")
            .send()
            .await;
        assert!(renewed.cache_status().has("stored"), "{renewed:?}");
        let now = proxy.search(None, json!({"query": query})).send().await;
        assert_hit(&now);
        assert_eq!(now.json()["n"], renewed.json()["n"]);
    }
}

#[tokio::test]
async fn in_a_users_own_scope_any_spelling_fills_the_users_entry() {
    let redis = Redis::start().await;
    let backend = reflecting_backend().await;
    let proxy = Proxy::start_process(&ProxyConfig::search(), &backend, &redis).await;
    let first = proxy
        .search(Some("u1"), json!({"query": "Cheese"}))
        .send()
        .await;
    assert_miss_stored(&first);
    assert_hit(
        &proxy
            .search(Some("u1"), json!({"query": "cheese"}))
            .send()
            .await,
    );
}

mod spelling_property {
    use super::*;
    use futures_util::future::join_all;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    const QUERIES: [&str; 4] = ["yoghurt", "cheese", "oat milk", "butter"];

    /// One spelling of a query: as is, shouted, padded, fullwidth, title
    /// case, or with its inner space doubled.
    fn spell(query: &str, how: usize) -> String {
        match how {
            0 => query.to_owned(),
            1 => query.to_uppercase(),
            2 => format!("  {query} "),
            3 => query
                .chars()
                .map(|c| match c {
                    'a'..='z' => char::from_u32(c as u32 + 0xFEE0).unwrap_or(c),
                    other => other,
                })
                .collect(),
            4 => {
                let mut chars = query.chars();
                chars
                    .next()
                    .map(|c| c.to_uppercase().chain(chars).collect())
                    .unwrap_or_default()
            }
            _ => query.replace(' ', "  "),
        }
    }

    #[test]
    fn a_shared_entry_holds_the_backends_answer_to_the_normalized_text_whatever_the_spelling() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("build a runtime");
        let (_redis, _backend, proxies) = rt.block_on(async {
            let redis = Redis::start().await;
            let backend = reflecting_backend().await;
            let mut proxies = Vec::new();
            for scope in ["global", "auto"] {
                let config = ProxyConfig::new().route(Route::search().scope(scope));
                proxies.push(Proxy::start(&config, &backend, &redis).await);
            }
            (redis, backend, proxies)
        });
        let mut runner = TestRunner::new(Config {
            cases: 24,
            failure_persistence: None,
            ..Config::default()
        });
        let request = (0..QUERIES.len(), 0..6usize, any::<bool>(), 0..2usize);
        let outcome = runner.run(&prop::collection::vec(request, 4..24), |asks| {
            let proxies = &proxies;
            rt.block_on(async move {
                // Sent at once, so spellings also meet in coalesced misses.
                let sent = asks.iter().map(|&(q, how, no_cache, p)| async move {
                    let mut req = proxies[p].search(None, json!({"query": spell(QUERIES[q], how)}));
                    if no_cache {
                        req = req.header("cache-control", "no-cache");
                    }
                    (q, req.send().await)
                });
                for (q, resp) in join_all(sent).await {
                    prop_assert_eq!(resp.status, 200);
                    if resp.x_cache() == Some("HIT") {
                        prop_assert_eq!(&resp.json()["query"], QUERIES[q], "{:?}", resp);
                    }
                }
                // What each shared entry now holds.
                for proxy in proxies {
                    for query in QUERIES {
                        let resp = proxy.search(None, json!({"query": query})).send().await;
                        prop_assert_eq!(&resp.json()["query"], query, "{:?}", resp);
                    }
                }
                Ok(())
            })
        });
        if let Err(e) = outcome {
            panic!("{e}");
        }
    }
}
