//! Redis behind a password, an ACL user and TLS, or named by a database
//! number or a Unix socket, through the real binary: the cache (lookups
//! share a connection of their own) and the search log work as with an open
//! Redis, a wrong password fails open, and secrets never reach the log or
//! `/readyz`.

mod common;

use common::ops::{admin, hget, leafcache, logged_search, lrange, run};
use common::*;
use leafcache::redis::keys;
use serde_json::{Value, json};

const PASSWORD: &str = "right-secret-91c2";
const WRONG: &str = "wrong-secret-7f3a";

/// Misses, stores in Redis, then hits from Redis (L1 is off), and logs the
/// hit's search record, read back through `redis`'s own client.
async fn cache_and_log_go_through(proxy: &Proxy, redis: &Redis) {
    let milk = proxy.search(Some("u1"), json!({"query": "milk"}));
    let first = milk.send().await;
    assert_miss_stored(&first);
    redis.wait_for_key(&user_key("u1", &first.key())).await;

    let repeat = milk.send().await;
    assert_hit(&repeat);
    assert_eq!(repeat.body, first.body);
    assert_eq!(
        repeat.backend_n(),
        1,
        "the backend saw only the first search"
    );

    let id = logged_search(redis, &repeat).await;
    let record = keys::search(&keys::Prefix::default(), &id);
    assert_eq!(hget(redis, &record, "query").await.as_deref(), Some("milk"));
    assert_eq!(hget(redis, &record, "user_id").await.as_deref(), Some("u1"));
    assert_eq!(hget(redis, &record, "cache").await.as_deref(), Some("hit"));
}

#[tokio::test]
async fn with_the_right_password_a_repeated_search_is_a_hit_from_redis_and_is_logged() {
    let redis = Redis::start_with_password(PASSWORD).await;
    let backend = Backend::echo().await;
    let proxy = Proxy::start_process(&ProxyConfig::search().without_l1(), &backend, &redis).await;

    cache_and_log_go_through(&proxy, &redis).await;

    let ready = admin(&proxy, "GET", "/readyz").send().await.json();
    assert_eq!(ready["redis"], "up", "{ready}");
    assert!(!proxy.log().contains(PASSWORD), "{}", proxy.log());
}

#[tokio::test]
async fn with_a_wrong_password_the_proxy_serves_from_the_backend_and_keeps_it_secret() {
    let redis = Redis::start_with_password(PASSWORD).await;
    let backend = Backend::echo().await;
    let url = format!("redis://:{WRONG}@127.0.0.1:{}", redis.port);
    let proxy =
        Proxy::start_process_with(&ProxyConfig::search().without_l1(), &backend.url(), &url).await;

    let milk = proxy.search(Some("u1"), json!({"query": "milk"}));
    for n in 1..=3 {
        let resp = milk.send().await;
        assert_eq!(resp.status, 200, "{resp:?}");
        assert_eq!(resp.x_cache(), Some("MISS"), "{resp:?}");
        assert_eq!(resp.backend_n(), n);
    }

    let ready = eventually("/readyz to show redis down", || async {
        let ready = admin(&proxy, "GET", "/readyz").send().await;
        (ready.json()["redis"] == "down").then_some(ready)
    })
    .await;
    let body = String::from_utf8_lossy(&ready.body).into_owned();
    assert!(!body.contains(WRONG), "{body}");

    // The one warning of the outage names Redis without the password.
    let log = eventually("the redis-unreachable warning", || async {
        let log = proxy.log();
        log.contains("redis is unreachable").then_some(log)
    })
    .await;
    assert!(log.contains("redis://***@127.0.0.1"), "{log}");
    assert!(!log.contains(WRONG), "{log}");
    assert!(redis.cache_keys().await.is_empty(), "nothing reached redis");
}

#[tokio::test]
async fn an_acl_user_with_its_password_caches_and_logs() {
    // The default user is password-protected, so only the ACL user's own
    // credentials let the proxy in.
    let redis = Redis::start_with_password(PASSWORD).await;
    let mut con = redis.conn().await;
    let _: () = redis::cmd("ACL")
        .arg(&[
            "SETUSER",
            "leaf",
            "on",
            ">leaf-pw-5d1e",
            "~*",
            "&*",
            "+@all",
        ])
        .query_async(&mut con)
        .await
        .expect("ACL SETUSER");
    let backend = Backend::echo().await;
    let url = format!("redis://leaf:leaf-pw-5d1e@127.0.0.1:{}", redis.port);
    let proxy =
        Proxy::start_process_with(&ProxyConfig::search().without_l1(), &backend.url(), &url).await;

    cache_and_log_go_through(&proxy, &redis).await;

    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut con)
        .await
        .expect("CLIENT LIST");
    assert!(
        clients.lines().any(|l| l.contains(" user=leaf ")),
        "the proxy is connected as leaf: {clients}"
    );
    assert!(!proxy.log().contains("leaf-pw-5d1e"), "{}", proxy.log());
}

#[tokio::test]
async fn over_tls_with_a_private_ca_a_repeated_search_is_a_hit_from_redis_and_is_logged() {
    let tls = TestTls::for_localhost();
    let redis = Redis::start_tls(&tls).await;
    let ca = tempfile::tempdir().unwrap();
    let ca_file = ca.path().join("server-ca.pem");
    std::fs::write(&ca_file, &tls.ca_pem).unwrap();
    let config = ProxyConfig::search().without_l1().redis(&format!(
        "tls_ca_file = {:?}",
        ca_file.display().to_string()
    ));
    assert!(redis.url().starts_with("rediss://"), "{}", redis.url());
    let backend = Backend::echo().await;
    let proxy = Proxy::start(&config, &backend, &redis).await;

    cache_and_log_go_through(&proxy, &redis).await;

    let ready = admin(&proxy, "GET", "/readyz").send().await.json();
    assert_eq!(ready["redis"], "up", "{ready}");
}

#[tokio::test]
async fn over_tls_a_server_outside_the_trusted_ca_is_refused_and_the_proxy_fails_open() {
    let tls = TestTls::for_localhost();
    let redis = Redis::start_tls(&tls).await;
    // A CA file that holds another CA: the server's certificate must not pass.
    let other = TestTls::for_localhost();
    let ca = tempfile::tempdir().unwrap();
    let ca_file = ca.path().join("other-ca.pem");
    std::fs::write(&ca_file, &other.ca_pem).unwrap();
    let config = ProxyConfig::search().without_l1().redis(&format!(
        "tls_ca_file = {:?}",
        ca_file.display().to_string()
    ));
    let backend = Backend::echo().await;
    let proxy = Proxy::start(&config, &backend, &redis).await;

    let milk = proxy.search(Some("u1"), json!({"query": "milk"}));
    for n in 1..=2 {
        let resp = milk.send().await;
        assert_eq!(resp.status, 200, "{resp:?}");
        assert_eq!(resp.x_cache(), Some("MISS"), "{resp:?}");
        assert_eq!(resp.backend_n(), n);
    }
    eventually("/readyz to show redis down", || async {
        let ready = admin(&proxy, "GET", "/readyz").send().await.json();
        (ready["redis"] == "down").then_some(())
    })
    .await;
    assert!(redis.cache_keys().await.is_empty(), "nothing reached redis");
}

#[tokio::test]
async fn batch_commands_read_redis_over_tls_with_the_private_ca() {
    let tls = TestTls::for_localhost();
    let redis = Redis::start_tls(&tls).await;
    let ca = tempfile::tempdir().unwrap();
    let ca_file = ca.path().join("server-ca.pem");
    std::fs::write(&ca_file, &tls.ca_pem).unwrap();
    let config = ProxyConfig::search().redis(&format!(
        "tls_ca_file = {:?}",
        ca_file.display().to_string()
    ));
    let backend = Backend::echo().await;
    let proxy = Proxy::start(&config, &backend, &redis).await;
    let resp = proxy
        .search(Some("u1"), json!({"query": "milk"}))
        .send()
        .await;
    logged_search(&redis, &resp).await;
    eventually("the history entry", || async {
        (!lrange(&redis, "user:u1:searches").await.is_empty()).then_some(())
    })
    .await;

    let history = run(leafcache(
        &proxy.config_path(),
        &["history", "u1", "--json"],
    ))
    .await;
    assert_eq!(history.code, 0, "{history:?}");
    let queries: Vec<Value> = history
        .json()
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|e| e["query"].clone())
        .collect();
    assert_eq!(queries, vec![json!("milk")]);
}

#[tokio::test]
async fn a_batch_command_with_a_wrong_password_fails_without_showing_it() {
    let redis = Redis::start_with_password(PASSWORD).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            "[redis]\nurl = \"redis://:{WRONG}@127.0.0.1:{}\"\n\n[events]\nspool_dir = {:?}\n",
            redis.port,
            dir.path().join("spool").display().to_string()
        ),
    )
    .unwrap();

    let history = run(leafcache(&config, &["history", "u1", "--json"])).await;
    assert_ne!(history.code, 0, "{history:?}");
    assert!(
        history.stderr.contains("authentication failed"),
        "it says why: {history:?}"
    );
    assert!(!history.stderr.contains(WRONG), "{}", history.stderr);
    assert!(!history.stdout_text().contains(WRONG), "{history:?}");
}

/// Lookups have a connection of their own: it selects the URL's database
/// too. A hit with L1 off can only come from database 3.
#[tokio::test]
async fn lookups_read_the_database_the_url_names() {
    let redis = Redis::start().await;
    let backend = Backend::echo().await;
    let url = format!("{}/3", redis.url());
    let proxy = Proxy::start_with(&ProxyConfig::search().without_l1(), &backend.url(), &url).await;
    let milk = proxy.search(Some("u1"), json!({"query": "milk"}));
    let first = milk.send().await;
    assert_miss_stored(&first);
    let key = user_key("u1", &first.key());
    // The entry is written in the background: once it is in database 3, the
    // next search can only be a hit. (Asking until a hit came let a second
    // miss reach the backend when the write was slow.)
    let db3 = redis::Client::open(url.as_str()).expect("the database 3 URL");
    eventually("the entry stored in database 3", || async {
        let mut con = db3.get_multiplexed_async_connection().await.ok()?;
        let n: i64 = redis::cmd("EXISTS")
            .arg(&key)
            .query_async(&mut con)
            .await
            .ok()?;
        (n == 1).then_some(())
    })
    .await;
    let hit = milk.send().await;
    assert_eq!(hit.x_cache(), Some("HIT"), "{hit:?}");
    assert_eq!(hit.backend_n(), 1, "the backend saw only the first search");
    assert!(
        !redis.exists(&key).await,
        "nothing was stored in database 0"
    );
}

/// The same through a `unix://` URL.
#[tokio::test]
async fn lookups_go_through_a_unix_socket_url() {
    let redis = Redis::start().await;
    let backend = Backend::echo().await;
    let proxy = Proxy::start_with(
        &ProxyConfig::search().without_l1(),
        &backend.url(),
        &redis.unix_url(),
    )
    .await;
    cache_and_log_go_through(&proxy, &redis).await;
}
