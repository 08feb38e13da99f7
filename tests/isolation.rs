//! User isolation under concurrency (SPEC section 7): a user-scope entry is
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
const QUERIES: [&str; 4] = ["milk", "bread", "oat milk", "eggs"];

/// How the client names itself: the identity sources of SPEC section 2.
#[derive(Clone, Copy, Debug)]
enum Via {
    Header,
    JsonBody,
}

/// One generated request: who, what (in some spelling), how, how many times at once.
#[derive(Clone, Debug)]
struct Search {
    user: usize,
    query: usize,
    shout: bool,
    via: Via,
    repeats: usize,
}

fn search() -> impl Strategy<Value = Search> {
    (
        0..USERS.len(),
        0..QUERIES.len(),
        any::<bool>(),
        prop_oneof![Just(Via::Header), Just(Via::JsonBody)],
        1..4usize,
    )
        .prop_map(|(user, query, shout, via, repeats)| Search {
            user,
            query,
            shout,
            via,
            repeats,
        })
}

/// The backend's marker: the user it was asked for and the (normalized) query.
fn marker_backend() -> impl Fn(&Recorded) -> Reply + Send + Sync + 'static {
    |req| {
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let user = req
            .header("x-user-id")
            .map(str::to_owned)
            .or_else(|| body["user_id"].as_str().map(str::to_owned));
        let query = body["query"].as_str().map(|q| q.trim().to_lowercase());
        Reply::json(json!({
            "marker": {"user": user, "query": query},
            "intent": "product_search",
            "products": [{"product_id": "p1", "supplier": "s1"}],
        }))
    }
}

async fn ask(proxy: &Proxy, s: &Search) -> Result<(), TestCaseError> {
    let user = USERS[s.user];
    let query = QUERIES[s.query];
    let spelled = if s.shout {
        format!("  {}  ", query.to_uppercase())
    } else {
        query.to_owned()
    };
    let req = match s.via {
        Via::Header => proxy.search(Some(user), json!({"query": spelled})),
        Via::JsonBody => proxy.search(None, json!({"query": spelled, "user_id": user})),
    };
    let resp = req.send().await;
    prop_assert_eq!(resp.status, 200, "{:?}", resp);
    let marker = &resp.json()["marker"];
    prop_assert_eq!(
        marker,
        &json!({"user": user, "query": query}),
        "{} asked for {:?} and got another answer ({:?}): {:?}",
        user,
        query,
        resp.x_cache(),
        resp
    );
    Ok(())
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
        let with_l1 = Proxy::start(&ProxyConfig::search(), &backend, &redis).await;
        let redis_tier = Proxy::start(&ProxyConfig::search().without_l1(), &backend, &redis).await;
        (redis, backend, [with_l1, redis_tier])
    });

    let mut runner = TestRunner::new(Config {
        cases: 16,
        failure_persistence: None,
        ..Config::default()
    });
    let outcome = runner.run(&prop::collection::vec(search(), 8..40), |searches| {
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
    let distinct = USERS.len() * QUERIES.len();
    assert!(
        backend.count() <= distinct * 4,
        "{} backend requests for {distinct} distinct user/query pairs: entries were reused",
        backend.count()
    );
}
