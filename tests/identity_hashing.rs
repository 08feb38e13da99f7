//! `hash_user_id = true`: the user key is derived from a secret such as the
//! Authorization header without the raw value ever reaching Redis or the
//! logs (docs/contract.md section 2 `[identity]`, issue 5).

mod common;

use common::events::LogStore;
use common::*;
use serde_json::json;

const TOKEN: &str = "Bearer sk-live-4f1b9c2e-very-secret";

#[tokio::test]
async fn a_hashed_authorization_identity_scopes_entries_and_never_reaches_redis() {
    let redis = Redis::start().await;
    let backend = Backend::echo().await;
    let config = ProxyConfig::search()
        .identity(r#"user_id = ["header:authorization"]"#)
        .identity("hash_user_id = true");
    let proxy = Proxy::start_process(&config, &backend, &redis).await;
    let search = |auth: &str| {
        proxy
            .search(None, json!({"query": "milk"}))
            .header("authorization", auth)
    };

    let first = search(TOKEN).send().await;
    assert_miss_stored(&first);
    assert_hit(&search(TOKEN).send().await);
    let other = search("Bearer someone-else").send().await;
    assert_eq!(
        other.x_cache(),
        Some("MISS"),
        "another token is another user"
    );

    // The user key is the token's SHA-256, never the token.
    let mut store = LogStore::new(&redis.url()).await;
    let id = first.header("x-search-id").unwrap_or_default().to_string();
    let record = eventually("the search record", || async {
        let h = LogStore::new(&redis.url())
            .await
            .hash(&format!("search:{id}"))
            .await;
        (!h.is_empty()).then_some(h)
    })
    .await;
    let user = record.get("user_id").cloned().unwrap_or_default();
    assert_eq!(user.len(), 64, "a hex SHA-256: {user}");
    assert!(user.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(redis.exists(&user_key(&user, &first.key())).await);

    // Nothing in Redis, keys or values, holds the raw secret.
    let secret = "sk-live-4f1b9c2e";
    for key in store.all_keys().await {
        assert!(!key.contains(secret), "key {key} holds the token");
        let mut conn = redis.conn().await;
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("TYPE");
        let dump: Vec<u8> = redis::cmd("DUMP")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("DUMP");
        assert!(
            !String::from_utf8_lossy(&dump).contains(secret),
            "{kind} {key} holds the token"
        );
    }
    // Nor does the proxy's own log.
    assert!(!proxy.log().contains(secret), "the log holds the token");
}

/// `[identity] max_bytes` (docs/keys-and-security.md, "Security model"): a client-chosen id
/// longer than it bypasses the cache and is logged without that id, from
/// whatever source it comes; one that fits is cached as before.
#[tokio::test]
async fn an_identity_longer_than_max_bytes_bypasses_and_is_logged_without_it() {
    let redis = Redis::start().await;
    let backend = Backend::echo().await;
    let config = ProxyConfig::search().identity("max_bytes = 64");
    let proxy = Proxy::start_process(&config, &backend, &redis).await;
    let long = "x".repeat(65);
    let milk = json!({"query": "milk"});
    let sent = [
        proxy.search(Some(&long), milk.clone()),
        proxy.search(None, json!({"query": "milk", "user_id": long})),
        proxy
            .post(&format!("/api/v1/search?user_id={long}"))
            .json(&milk),
        proxy
            .search(None, milk.clone())
            .header("x-user-uuid", &long),
        proxy.search(Some("u1"), json!({"query": "milk", "session_id": long})),
    ];
    for req in sent {
        let resp = req.send().await;
        assert_bypass(&resp, "identity-too-long");
        let id = resp
            .header("x-search-id")
            .unwrap_or_else(|| panic!("the search is logged: {resp:?}"))
            .to_owned();
        let record = eventually("the search record", || async {
            let r = Req::new(proxy.admin, "GET", &format!("/v1/searches/{id}"))
                .send()
                .await;
            (r.status == 200).then_some(r)
        })
        .await;
        let text = String::from_utf8_lossy(&record.body);
        assert!(!text.contains(&long), "logged with the long id: {text}");
        assert_eq!(record.json()["query"], "milk");
    }
    // explain names the bypass too.
    let explained = Req::new(proxy.admin, "POST", "/v1/explain")
        .json(&json!({
            "method": "POST",
            "path": "/api/v1/search",
            "headers": {"content-type": "application/json", "x-user-id": long},
            "body": r#"{"query": "milk"}"#,
        }))
        .send()
        .await;
    assert_eq!(explained.status, 200, "{explained:?}");
    assert_eq!(explained.json()["bypass"]["reason"], "identity-too-long");
    // Nothing in Redis names the long id.
    let mut store = LogStore::new(&redis.url()).await;
    for key in store.all_keys().await {
        assert!(!key.contains(&long), "{key}");
    }
    // An id within the bound is cached and logged as before.
    let fits = "x".repeat(64);
    assert_miss_stored(&proxy.search(Some(&fits), milk.clone()).send().await);
    assert_hit(&proxy.search(Some(&fits), milk.clone()).send().await);
}
