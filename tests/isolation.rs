//! User isolation under concurrency (docs/contract.md section 7): a user-scope entry is
//! served only to the same user id, whatever the interleaving of users,
//! queries, misses, coalesced waits and hits.
//!
//! One proxy serves every generated case, so later cases meet entries (in L1
//! and Redis) that earlier cases stored.

mod common;

use common::*;
use futures_util::future::join_all;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};

const USERS: [&str; 5] = ["u-ann", "u-bob", "u-cy", "u-dee", "u-eve"];
/// Guests: no user id, only a user uuid (docs/keys-and-security.md, "Security model": two
/// guests never share an entry).
const GUESTS: [&str; 3] = ["g-fox", "g-gil", "g-hal"];
const QUERIES: [&str; 4] = ["milk", "bread", "oat milk", "eggs"];

/// How the client names itself: each identity source of `[identity]`.
#[derive(Clone, Copy, Debug)]
enum Via {
    Header,
    JsonBody,
    Query,
}

/// Who asks: a user by id, or a guest by user uuid.
#[derive(Clone, Copy, Debug)]
enum Who {
    User(usize),
    Guest(usize),
}

/// One generated request: who, what (in some spelling), how, how many times at once.
#[derive(Clone, Debug)]
struct Search {
    who: Who,
    query: usize,
    shout: bool,
    via: Via,
    repeats: usize,
}

fn search() -> impl Strategy<Value = Search> {
    (
        prop_oneof![
            (0..USERS.len()).prop_map(Who::User),
            (0..GUESTS.len()).prop_map(Who::Guest),
        ],
        0..QUERIES.len(),
        any::<bool>(),
        prop_oneof![Just(Via::Header), Just(Via::JsonBody), Just(Via::Query)],
        1..4usize,
    )
        .prop_map(|(who, query, shout, via, repeats)| Search {
            who,
            query,
            shout,
            via,
            repeats,
        })
}

/// `[identity]` with every source for both fields, so that each is tried.
fn every_source(config: ProxyConfig) -> ProxyConfig {
    config.identity(r#"user_uuid = ["header:x-user-uuid", "json:/user_uuid", "query:user_uuid"]"#)
}

/// A query-string parameter of the request the backend got.
fn param<'a>(req: &'a Recorded, name: &str) -> Option<&'a str> {
    let (_, query) = req.path_and_query.split_once('?')?;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

/// The backend's marker: the user or guest it was asked for, from any
/// source, and the (normalized) query.
fn marker_backend() -> impl Fn(&Recorded) -> Reply + Send + Sync + 'static {
    |req| {
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let read = |header: &str, member: &str| {
            req.header(header)
                .map(str::to_owned)
                .or_else(|| body[member].as_str().map(str::to_owned))
                .or_else(|| param(req, member).map(str::to_owned))
        };
        let query = body["query"].as_str().map(|q| q.trim().to_lowercase());
        Reply::json(json!({
            "marker": {
                "user": read("x-user-id", "user_id"),
                "guest": read("x-user-uuid", "user_uuid"),
                "query": query,
            },
            "intent": "product_search",
            "products": [{"product_id": "p1", "supplier": "s1"}],
        }))
    }
}

/// The request of `who` for `query`, naming itself `via` one source.
fn request(proxy: &Proxy, who: Who, via: Via, query: &str) -> Req {
    let (header, member, name) = match who {
        Who::User(u) => ("x-user-id", "user_id", USERS[u]),
        Who::Guest(g) => ("x-user-uuid", "user_uuid", GUESTS[g]),
    };
    match via {
        Via::Header => proxy
            .search(None, json!({"query": query}))
            .header(header, name),
        Via::JsonBody => proxy.search(None, json!({"query": query, member: name})),
        Via::Query => proxy
            .post(&format!("/api/v1/search?{member}={name}"))
            .json(&json!({"query": query})),
    }
}

fn expected(who: Who, query: &str) -> Value {
    match who {
        Who::User(u) => json!({"user": USERS[u], "guest": null, "query": query}),
        Who::Guest(g) => json!({"user": null, "guest": GUESTS[g], "query": query}),
    }
}

async fn ask(proxy: &Proxy, s: &Search) -> Result<(), TestCaseError> {
    let query = QUERIES[s.query];
    let spelled = if s.shout {
        format!("  {}  ", query.to_uppercase())
    } else {
        query.to_owned()
    };
    let resp = request(proxy, s.who, s.via, &spelled).send().await;
    prop_assert_eq!(resp.status, 200, "{:?}", resp);
    let marker = &resp.json()["marker"];
    prop_assert_eq!(
        marker,
        &expected(s.who, query),
        "{:?} asked for {:?} and got another answer ({:?}): {:?}",
        s.who,
        query,
        resp.x_cache(),
        resp
    );
    Ok(())
}

#[tokio::test]
async fn two_guests_never_share_an_entry_whatever_source_carries_their_uuid() {
    let redis = Redis::start().await;
    let backend = Backend::start(marker_backend()).await;
    let proxy = Proxy::start_process(&every_source(ProxyConfig::search()), &backend, &redis).await;
    for (i, via) in [Via::Header, Via::JsonBody, Via::Query]
        .into_iter()
        .enumerate()
    {
        let query = QUERIES[i];
        let first = request(&proxy, Who::Guest(0), via, query).send().await;
        assert_miss_stored(&first);
        let other = request(&proxy, Who::Guest(1), via, query).send().await;
        assert_eq!(
            other.json()["marker"],
            expected(Who::Guest(1), query),
            "guest {} got guest {}'s answer via {via:?}: {other:?}",
            GUESTS[1],
            GUESTS[0]
        );
        assert_miss_stored(&other);
        let again = request(&proxy, Who::Guest(0), via, query).send().await;
        assert_hit(&again);
        assert_eq!(again.json()["marker"], expected(Who::Guest(0), query));
    }
}

#[tokio::test]
async fn a_guests_session_id_is_volatile_and_its_uuid_header_is_keyed_by_default() {
    let redis = Redis::start().await;
    let backend = Backend::start(marker_backend()).await;
    // The shipped `[identity]`: the uuid header is the first source.
    let proxy = Proxy::start_process(&ProxyConfig::search(), &backend, &redis).await;
    let guest = |uuid: &str, session: &str| {
        proxy
            .search(None, json!({"query": "milk"}))
            .header("x-user-uuid", uuid)
            .header("x-session-id", session)
    };
    assert_miss_stored(&guest("g-1", "s-1").send().await);
    // Another session of the same guest shares the entry (docs/keys-and-security.md, "How the
    // key is built": requests that differ only in session id share one).
    assert_hit(&guest("g-1", "s-2").send().await);
    let other = guest("g-2", "s-1").send().await;
    assert_miss_stored(&other);
    assert_eq!(other.json()["marker"]["guest"], "g-2");
}

#[test]
fn no_user_ever_receives_another_users_answer_under_concurrency() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build a runtime");
    // Two proxies on one Redis: with L1, and without, where every hit
    // comes through the one Redis connection all lookups share, replies
    // matched to requests by their order.
    let (_redis, backend, proxies) = rt.block_on(async {
        let redis = Redis::start().await;
        let backend = Backend::start(marker_backend()).await;
        let config = every_source(ProxyConfig::search());
        let with_l1 = Proxy::start(&config, &backend, &redis).await;
        let redis_tier = Proxy::start(&config.clone().without_l1(), &backend, &redis).await;
        (redis, backend, [with_l1, redis_tier])
    });

    let mut runner = TestRunner::new(Config {
        cases: 16,
        failure_persistence: None,
        ..Config::default()
    });
    // Another spelling of a guest's search is answered from the shared
    // entry but never stored there (docs/keys-and-security.md, "Security model"): those
    // requests may all reach the backend.
    let unstored = std::sync::atomic::AtomicUsize::new(0);
    let outcome = runner.run(&prop::collection::vec(search(), 8..40), |searches| {
        let shouted_guests: usize = searches
            .iter()
            .filter(|s| s.shout && matches!(s.who, Who::Guest(_)))
            .map(|s| s.repeats * proxies.len())
            .sum();
        unstored.fetch_add(shouted_guests, std::sync::atomic::Ordering::Relaxed);
        rt.block_on(async {
            let all = proxies.iter().flat_map(|proxy| {
                searches
                    .iter()
                    .flat_map(|s| std::iter::repeat_n(s, s.repeats))
                    .map(move |s| ask(proxy, s))
            });
            join_all(all).await.into_iter().collect::<Result<(), _>>()
        })
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
    // Hits happened: the property was checked against stored answers too.
    let distinct = (USERS.len() + GUESTS.len()) * QUERIES.len();
    let unstored = unstored.into_inner();
    assert!(
        backend.count() <= distinct * 4 + unstored,
        "{} backend requests for {distinct} distinct user/query pairs: entries were reused",
        backend.count()
    );
}
