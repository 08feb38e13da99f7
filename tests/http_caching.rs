//! Standard HTTP caching on `freshness = "origin"` routes (docs/contract.md section 3b,
//! RFC 9111), end to end: a real backend whose answers each test scripts, a
//! real redis-server, the real binary.
//!
//! Freshness runs out in real time here: answers use one- or two-second
//! lifetimes and the tests poll until the entry is stale.

mod common;

use common::*;

/// An echo answer (its body names the backend request `n`) with these headers.
fn echo(req: &Recorded, headers: &[(&str, &str)]) -> Reply {
    headers
        .iter()
        .fold(Reply::echo(req), |r, (k, v)| r.header(k, v))
}

fn origin_route() -> Route {
    Route::new("pages")
        .set("path_prefix", r#""/p/""#)
        .set("freshness", r#""origin""#)
        .scope("global")
}

fn config() -> ProxyConfig {
    ProxyConfig::new()
        .route(origin_route())
        .upstream(r#"timeout = "400ms""#)
}

async fn setup(config: ProxyConfig, script: &Script) -> Harness {
    Harness::with_backend(&config, script.backend().await).await
}

async fn setup_static(headers: &'static [(&'static str, &'static str)]) -> Harness {
    setup(config(), &Script::new(move |req| echo(req, headers))).await
}

/// Sends `req` until its answer is not a HIT (the entry went stale), at most
/// [`WAIT`]; returns that answer.
async fn until_not_hit(req: &Req) -> Resp {
    eventually("the stored answer to go stale", || async {
        let resp = req.send().await;
        (resp.x_cache() != Some("HIT")).then_some(resp)
    })
    .await
}

#[track_caller]
fn assert_x_cache(resp: &Resp, want: &str) {
    assert_eq!(resp.x_cache(), Some(want), "{resp:?}");
}

// ---- freshness -------------------------------------------------------------

#[tokio::test]
async fn max_age_is_served_fresh_with_age_and_date() {
    let s = setup_static(&[("cache-control", "max-age=60")]).await;
    let get = s.proxy.get("/p/a");
    let first = get.send().await;
    assert_miss_stored(&first);
    let second = get.send().await;
    assert_hit(&second);
    assert_eq!(second.body, first.body);
    assert_eq!(
        second.header("date"),
        first.header("date"),
        "the stored Date is kept"
    );
    assert_eq!(s.backend.count(), 1);
}

#[tokio::test]
async fn s_maxage_wins_over_a_longer_max_age() {
    let s = setup_static(&[("cache-control", "max-age=3600, s-maxage=1")]).await;
    let get = s.proxy.get("/p/a");
    assert_miss_stored(&get.send().await);
    let later = until_not_hit(&get).await;
    assert_x_cache(&later, "MISS");
    assert_eq!(s.backend.count(), 2);
}

#[tokio::test]
async fn an_upstream_age_counts_toward_the_entrys_age() {
    let s = setup_static(&[("cache-control", "max-age=600"), ("age", "30")]).await;
    let get = s.proxy.get("/p/a");
    get.send().await;
    let hit = get.send().await;
    assert_hit(&hit);
    let age: u64 = hit.header("age").and_then(|a| a.parse().ok()).expect("Age");
    assert!(age >= 30, "Age {age} includes the upstream's 30 s");

    // Older than its lifetime on arrival: never served from the cache.
    let s = setup_static(&[("cache-control", "max-age=3600"), ("age", "7200")]).await;
    let get = s.proxy.get("/p/a");
    assert_x_cache(&get.send().await, "MISS");
    assert_x_cache(&get.send().await, "MISS");
    assert_eq!(s.backend.count(), 2);
}

#[tokio::test]
async fn a_list_age_counts_by_its_first_member_and_an_invalid_age_is_ignored() {
    // RFC 9111 section 5.1: `Age: 0, 0` is 0, `Age: abc` is ignored.
    const CASES: [&[(&str, &str)]; 3] = [
        &[("cache-control", "max-age=3600"), ("age", "0, 0")],
        &[("cache-control", "max-age=3600"), ("age", "abc")],
        &[("cache-control", "max-age=3600"), ("age", "-1")],
    ];
    for headers in CASES {
        let age = headers[1].1;
        let s = setup_static(headers).await;
        let get = s.proxy.get("/p/a");
        assert_miss_stored(&get.send().await);
        assert_hit(&get.send().await);
        assert_eq!(s.backend.count(), 1, "Age {age:?}");
    }
    // The first member decides: older than its lifetime on arrival.
    let s = setup_static(&[("cache-control", "max-age=3600"), ("age", "7200, 0")]).await;
    let get = s.proxy.get("/p/a");
    assert_x_cache(&get.send().await, "MISS");
    assert_x_cache(&get.send().await, "MISS");
    assert_eq!(s.backend.count(), 2);
}

#[tokio::test]
async fn expires_in_every_date_format_gives_freshness() {
    for expires in [
        "Tue, 19 Jan 2100 03:14:08 GMT",
        "Monday, 19-Jan-60 03:14:08 GMT", // two-digit year: 2060
        "Tue Jan 19 03:14:08 2100",
    ] {
        let s = setup(
            config(),
            &Script::new(move |req| echo(req, &[("expires", expires)])),
        )
        .await;
        let get = s.proxy.get("/p/a");
        assert_miss_stored(&get.send().await);
        assert_hit(&get.send().await);
    }
}

#[tokio::test]
async fn an_invalid_or_past_expires_means_already_expired() {
    for expires in ["0", "Thu, 01 Jan 1970 00:00:00 GMT", "tomorrow"] {
        let s = setup(
            config(),
            &Script::new(move |req| echo(req, &[("expires", expires)])),
        )
        .await;
        let get = s.proxy.get("/p/a");
        assert_miss_not_stored(&get.send().await);
        assert_x_cache(&get.send().await, "MISS");
        assert_eq!(s.backend.count(), 2, "{expires}");
    }
}

#[tokio::test]
async fn without_explicit_freshness_nothing_is_stored_unless_heuristics_are_on() {
    const LM: &[(&str, &str)] = &[("last-modified", "Wed, 01 Jan 2020 00:00:00 GMT")];
    let s = setup_static(LM).await;
    let get = s.proxy.get("/p/a");
    assert_miss_not_stored(&get.send().await);
    assert_miss_not_stored(&get.send().await);

    let heuristic = ProxyConfig::new().route(origin_route().set("heuristic", "true"));
    let s = setup(heuristic, &Script::new(|req| echo(req, LM))).await;
    let get = s.proxy.get("/p/a");
    assert_miss_stored(&get.send().await);
    assert_hit(&get.send().await);

    // 201 is not heuristically cacheable.
    let s = setup(
        ProxyConfig::new().route(origin_route().set("heuristic", "true")),
        &Script::new(|req| echo(req, LM).status(201)),
    )
    .await;
    let get = s.proxy.get("/p/a");
    get.send().await;
    assert_x_cache(&get.send().await, "MISS");
}

#[tokio::test]
async fn any_status_with_explicit_freshness_is_stored() {
    let s = setup(
        config(),
        &Script::new(|req| echo(req, &[("cache-control", "max-age=60")]).status(404)),
    )
    .await;
    let get = s.proxy.get("/p/missing");
    let first = get.send().await;
    assert_eq!(first.status, 404);
    let second = get.send().await;
    assert_eq!(second.status, 404);
    assert_x_cache(&second, "HIT");
    assert_eq!(s.backend.count(), 1);
}

// ---- response directives ---------------------------------------------------

#[tokio::test]
async fn no_store_and_private_are_not_stored_in_the_shared_scope() {
    for cc in [
        "max-age=60, no-store",
        "max-age=60, private",
        "max-age=60, No-StOrE",
    ] {
        let s = setup(
            config(),
            &Script::new(move |req| echo(req, &[("cache-control", cc)])),
        )
        .await;
        let get = s.proxy.get("/p/a");
        get.send().await;
        assert_x_cache(&get.send().await, "MISS");
        assert_eq!(s.backend.count(), 2, "{cc}");
    }
}

/// An origin whose answer carries `cache_control` and `ETag: "v1"`, and
/// which answers `304` to `If-None-Match: "v1"`.
fn etag_script(cache_control: &'static str) -> Script {
    Script::new(move |req| {
        if req.header("if-none-match") == Some("\"v1\"") {
            return Reply::echo(req).status(304).body("");
        }
        echo(req, &[("cache-control", cache_control), ("etag", "\"v1\"")])
    })
}

#[tokio::test]
async fn no_cache_is_stored_but_revalidated_before_every_use() {
    let script = etag_script("no-cache, max-age=3600");
    let s = setup(config(), &script).await;
    let get = s.proxy.get("/p/a");
    let first = get.send().await;
    assert_miss_stored(&first);
    let second = get.send().await;
    assert_x_cache(&second, "REVALIDATED");
    assert_eq!(second.body, first.body, "the stored body");
    assert_eq!(s.backend.count(), 2);
    assert_eq!(s.backend.last().header("if-none-match"), Some("\"v1\""));
}

#[tokio::test]
async fn a_stale_must_revalidate_entry_with_a_validator_is_revalidated_conditionally() {
    let script = etag_script("max-age=1, must-revalidate");
    let s = setup(config(), &script).await;
    let get = s.proxy.get("/p/a");
    let first = get.send().await;
    assert_miss_stored(&first);
    // Once stale, it is not served as is: the backend is asked, with the
    // stored validator, and its 304 serves the stored body.
    let revalidated = until_not_hit(&get).await;
    assert_x_cache(&revalidated, "REVALIDATED");
    assert_eq!(revalidated.body, first.body, "the stored body");
    assert_eq!(s.backend.last().header("if-none-match"), Some("\"v1\""));
}

#[tokio::test]
async fn must_revalidate_never_serves_stale_and_answers_504_when_the_backend_is_down() {
    for cc in [
        "max-age=1, must-revalidate",
        "max-age=1, proxy-revalidate",
        "s-maxage=1",
    ] {
        let never = Gate::new();
        let script = Script::new(move |req| echo(req, &[("cache-control", cc)]));
        let s = setup(config(), &script).await;
        let get = s.proxy.get("/p/a");
        assert_miss_stored(&get.send().await);
        script.set(move |req| Reply::echo(req).hold_until(&never));
        let failed = until_not_hit(&get).await;
        assert_eq!(failed.status, 504, "{cc}: {failed:?}");
        assert_eq!(failed.json()["error"], "revalidation_failed");
    }
}

#[tokio::test]
async fn stale_if_error_serves_the_stale_entry_when_the_backend_fails() {
    let script = Script::new(|req| echo(req, &[("cache-control", "max-age=1")]));
    let s = setup(config(), &script).await;
    let get = s.proxy.get("/p/a");
    let first = get.send().await;
    script.set(|req| Reply::echo(req).status(503));
    let stale = until_not_hit(&get).await;
    assert_x_cache(&stale, "STALE");
    assert_eq!(stale.body, first.body);
    assert!(stale.cache_status().raw.contains("fwd-status=503"));

    // The answer's own stale-if-error=0 allows no grace.
    let script = Script::new(|req| echo(req, &[("cache-control", "max-age=1, stale-if-error=0")]));
    let s = setup(config(), &script).await;
    let get = s.proxy.get("/p/a");
    get.send().await;
    script.set(|req| Reply::echo(req).status(503));
    let failed = until_not_hit(&get).await;
    assert_eq!(failed.status, 503, "{failed:?}");
}

#[tokio::test]
async fn stale_while_revalidate_serves_stale_and_refreshes_in_the_background() {
    let script = Script::new(|req| {
        echo(
            req,
            &[("cache-control", "max-age=1, stale-while-revalidate=60")],
        )
    });
    let s = setup(config(), &script).await;
    let get = s.proxy.get("/p/a");
    let first = get.send().await;
    let stale = until_not_hit(&get).await;
    assert_x_cache(&stale, "STALE");
    assert_eq!(stale.body, first.body);
    assert!(stale.cache_status().raw.contains("stale-while-revalidate"));
    s.backend.wait_for_count(2).await;
    // A hit on an answer the backend gave after the first: the background
    // refresh was stored. (Not "the second" exactly: with max-age=1 a slow
    // poll can find the refreshed copy stale again and start another.)
    let refreshed = eventually("the background refresh to be stored", || async {
        let resp = get.send().await;
        (resp.x_cache() == Some("HIT") && resp.backend_n() >= 2).then_some(resp)
    })
    .await;
    assert_hit(&refreshed);
}

#[tokio::test]
async fn an_invalid_cdn_cache_control_is_ignored_entirely() {
    // RFC 9213 section 2.1: not a Structured Field dictionary, or a member
    // of the wrong type, and the field is ignored; Cache-Control rules.
    const CASES: [&[(&str, &str)]; 2] = [
        &[
            ("cache-control", "no-store"),
            ("cdn-cache-control", "max-age=10000, &&&&&"),
        ],
        &[
            ("cache-control", "no-store"),
            ("cdn-cache-control", "max-age=\"10000\""),
        ],
    ];
    for headers in CASES {
        let s = setup_static(headers).await;
        let get = s.proxy.get("/p/a");
        assert_x_cache(&get.send().await, "MISS");
        assert_x_cache(&get.send().await, "MISS");
        assert_eq!(s.backend.count(), 2, "{headers:?}");
    }
}

#[tokio::test]
async fn cdn_cache_control_takes_precedence_and_is_not_passed_on() {
    let s = setup_static(&[
        ("cache-control", "no-store"),
        ("cdn-cache-control", "max-age=60"),
    ])
    .await;
    let get = s.proxy.get("/p/a");
    let first = get.send().await;
    assert_miss_stored(&first);
    assert!(first.header("cdn-cache-control").is_none());
    assert_eq!(first.header("cache-control"), Some("no-store"));
    let hit = get.send().await;
    assert_hit(&hit);
    assert!(hit.header("cdn-cache-control").is_none());

    let s = setup_static(&[
        ("cache-control", "max-age=60"),
        ("cdn-cache-control", "no-store"),
    ])
    .await;
    let get = s.proxy.get("/p/a");
    get.send().await;
    assert_x_cache(&get.send().await, "MISS");
}

// ---- request directives ----------------------------------------------------

#[tokio::test]
async fn request_directives_no_cache_max_age_min_fresh_and_pragma_go_to_the_backend() {
    let s = setup_static(&[("cache-control", "max-age=3600")]).await;
    let get = s.proxy.get("/p/a");
    assert_miss_stored(&get.send().await);
    let mut expected = 1;
    for (name, value) in [
        ("cache-control", "no-cache"),
        ("cache-control", "max-age=0"),
        ("cache-control", "min-fresh=7200"),
        ("pragma", "no-cache"),
    ] {
        let resp = get.clone().header(name, value).send().await;
        expected += 1;
        assert_x_cache(&resp, "MISS");
        assert_eq!(s.backend.count(), expected, "{name}: {value}");
    }
    // Pragma is ignored next to Cache-Control.
    let resp = get
        .clone()
        .header("cache-control", "max-age=3600")
        .header("pragma", "no-cache")
        .send()
        .await;
    assert_hit(&resp);
}

#[tokio::test]
async fn max_stale_accepts_a_stale_entry() {
    let s = setup_static(&[("cache-control", "max-age=1")]).await;
    let get = s.proxy.get("/p/a");
    let first = get.send().await;
    // Wait until the entry is stale: a request without max-stale refetches.
    until_not_hit(&get).await;
    let n = s.backend.count();
    let stale = eventually("a stale entry for max-stale", || async {
        let resp = get
            .clone()
            .header("cache-control", "max-stale")
            .send()
            .await;
        (resp.x_cache() == Some("STALE")).then_some(resp)
    })
    .await;
    assert!(stale.cache_status().raw.contains("detail=max-stale"));
    assert_ne!(stale.body, first.body, "the newest stored answer");
    assert!(s.backend.count() <= n + 1);
}

#[tokio::test]
async fn only_if_cached_answers_504_without_a_stored_answer() {
    let s = setup_static(&[("cache-control", "max-age=60")]).await;
    let oic = |path: &str| s.proxy.get(path).header("cache-control", "only-if-cached");
    let none = oic("/p/a").send().await;
    assert_eq!(none.status, 504);
    assert_eq!(
        s.backend.count(),
        0,
        "only-if-cached never asks the backend"
    );
    s.proxy.get("/p/a").send().await;
    let hit = oic("/p/a").send().await;
    assert_eq!(hit.status, 200);
    assert_hit(&hit);
}

#[tokio::test]
async fn request_no_store_bypasses() {
    let s = setup_static(&[("cache-control", "max-age=60")]).await;
    let resp = s
        .proxy
        .get("/p/a")
        .header("cache-control", "no-store")
        .send()
        .await;
    assert_bypass(&resp, "no-store");
    assert_miss_stored(&s.proxy.get("/p/a").send().await);
}

// ---- Authorization ---------------------------------------------------------

#[tokio::test]
async fn an_authorized_answer_is_shared_only_when_it_says_so() {
    let s = setup_static(&[("cache-control", "max-age=60")]).await;
    let auth = s.proxy.get("/p/a").header("authorization", "Bearer one");
    assert_miss_not_stored(&auth.send().await);
    assert_x_cache(&auth.send().await, "MISS");
    assert_eq!(s.backend.count(), 2);

    for cc in [
        "public, max-age=60",
        "s-maxage=60",
        "must-revalidate, max-age=60",
    ] {
        let s = setup(
            config(),
            &Script::new(move |req| echo(req, &[("cache-control", cc)])),
        )
        .await;
        let auth = s.proxy.get("/p/a").header("authorization", "Bearer one");
        assert_miss_stored(&auth.send().await);
        assert_hit(&auth.send().await);
    }

    // An entry stored without Authorization is not served to a request with it.
    let s = setup_static(&[("cache-control", "max-age=60")]).await;
    s.proxy.get("/p/a").send().await;
    let auth = s.proxy.get("/p/a").header("authorization", "Bearer one");
    assert_x_cache(&auth.send().await, "MISS");
}

// ---- Vary ------------------------------------------------------------------

#[tokio::test]
async fn vary_keeps_one_variant_per_header_value() {
    let s = setup_static(&[("cache-control", "max-age=60"), ("vary", "Accept-Language")]).await;
    let lang = |l: &str| s.proxy.get("/p/a").header("accept-language", l);
    let en = lang("en").send().await;
    assert_miss_stored(&en);
    let fr = lang("fr").send().await;
    assert_miss_stored(&fr);
    assert_ne!(en.body, fr.body);
    let en2 = lang("en").send().await;
    assert_hit(&en2);
    assert_eq!(en2.body, en.body);
    let fr2 = lang("fr").send().await;
    assert_hit(&fr2);
    assert_eq!(fr2.body, fr.body);
    // A request without the header is a third variant.
    assert_x_cache(&s.proxy.get("/p/a").send().await, "MISS");
    assert_eq!(s.backend.count(), 3);
}

#[tokio::test]
async fn vary_values_are_normalized_and_star_never_matches() {
    let s = setup_static(&[("cache-control", "max-age=60"), ("vary", "accept-encoding")]).await;
    let ae = |v: &str| s.proxy.get("/p/a").header("accept-encoding", v);
    assert_miss_stored(&ae("gzip,br").send().await);
    assert_hit(&ae("gzip, br").send().await);

    let s = setup_static(&[("cache-control", "max-age=60"), ("vary", "*")]).await;
    let get = s.proxy.get("/p/a");
    assert_miss_not_stored(&get.send().await);
    assert_x_cache(&get.send().await, "MISS");
}

// ---- validation ------------------------------------------------------------

#[tokio::test]
async fn a_stale_entry_is_revalidated_and_a_304_refreshes_its_headers() {
    let script = Script::new(|req| {
        echo(
            req,
            &[
                ("cache-control", "max-age=1"),
                ("etag", "\"v1\""),
                ("x-version", "1"),
            ],
        )
    });
    let s = setup(config(), &script).await;
    let get = s.proxy.get("/p/a");
    let first = get.send().await;
    script.set(|req| {
        if req.header("if-none-match") == Some("\"v1\"") {
            Reply::echo(req)
                .status(304)
                .body("")
                .header("cache-control", "max-age=60")
                .header("x-version", "2")
                .header("etag", "\"v1\"")
        } else {
            Reply::echo(req).status(500)
        }
    });
    let revalidated = until_not_hit(&get).await;
    assert_x_cache(&revalidated, "REVALIDATED");
    assert_eq!(revalidated.status, 200);
    assert_eq!(revalidated.body, first.body, "the stored body");
    assert_eq!(
        revalidated.header("x-version"),
        Some("2"),
        "headers updated"
    );
    assert_eq!(revalidated.header("cache-control"), Some("max-age=60"));
    assert!(revalidated.cache_status().raw.contains("fwd-status=304"));
    // Fresh again for 60 s.
    let hit = get.send().await;
    assert_hit(&hit);
    assert_eq!(hit.header("x-version"), Some("2"));
}

#[tokio::test]
async fn last_modified_is_revalidated_with_if_modified_since() {
    const LM: &str = "Wed, 01 Jan 2020 00:00:00 GMT";
    let script = Script::new(|req| {
        if req.header("if-modified-since") == Some(LM) {
            return Reply::echo(req).status(304).body("");
        }
        echo(
            req,
            &[("cache-control", "max-age=1"), ("last-modified", LM)],
        )
    });
    let s = setup(config(), &script).await;
    let get = s.proxy.get("/p/a");
    get.send().await;
    let revalidated = until_not_hit(&get).await;
    assert_x_cache(&revalidated, "REVALIDATED");
    assert_eq!(s.backend.last().header("if-modified-since"), Some(LM));
}

#[tokio::test]
async fn a_clients_conditional_request_is_answered_304_from_a_fresh_entry() {
    let s = setup_static(&[
        ("cache-control", "max-age=60"),
        ("etag", "\"v1\""),
        ("last-modified", "Wed, 01 Jan 2020 00:00:00 GMT"),
    ])
    .await;
    let get = s.proxy.get("/p/a");
    get.send().await;
    for inm in ["\"v1\"", "W/\"v1\"", "\"x\", \"v1\""] {
        let resp = get.clone().header("if-none-match", inm).send().await;
        assert_eq!(resp.status, 304, "{inm}: {resp:?}");
        assert!(resp.body.is_empty());
        assert_eq!(resp.header("etag"), Some("\"v1\""));
        assert_x_cache(&resp, "HIT");
    }
    let other = get.clone().header("if-none-match", "\"v2\"").send().await;
    assert_eq!(other.status, 200);
    assert_x_cache(&other, "HIT");
    let ims = get
        .clone()
        .header("if-modified-since", "Thu, 02 Jan 2020 00:00:00 GMT")
        .send()
        .await;
    assert_eq!(ims.status, 304);
    // If-None-Match takes precedence.
    let both = get
        .clone()
        .header("if-none-match", "\"v2\"")
        .header("if-modified-since", "Thu, 02 Jan 2020 00:00:00 GMT")
        .send()
        .await;
    assert_eq!(both.status, 200);
    assert_eq!(s.backend.count(), 1);
}

#[tokio::test]
async fn a_clients_conditional_miss_fetches_the_full_answer() {
    let s = setup_static(&[("cache-control", "max-age=60"), ("etag", "\"v1\"")]).await;
    let cond = s.proxy.get("/p/a").header("if-none-match", "\"v1\"");
    let resp = cond.send().await;
    assert_eq!(resp.status, 304, "answered from the stored answer");
    assert!(s.backend.last().header("if-none-match").is_none());
    let full = s.proxy.get("/p/a").send().await;
    assert_hit(&full);
    assert!(!full.body.is_empty());
}

// ---- invalidation ----------------------------------------------------------

#[tokio::test]
async fn unsafe_methods_invalidate_the_uri() {
    for method in ["POST", "PUT", "DELETE", "PATCH", "M-SEARCH"] {
        let s = setup_static(&[("cache-control", "max-age=60")]).await;
        let get = s.proxy.get("/p/a");
        get.send().await;
        assert_hit(&get.send().await);
        let resp = s.proxy.request(method, "/p/a").send().await;
        assert_eq!(resp.status, 200);
        assert_x_cache(&get.send().await, "MISS");
        assert_eq!(s.backend.count(), 3, "{method}");
    }
}

#[tokio::test]
async fn location_and_content_location_are_invalidated_too() {
    let script = Script::new(|req| {
        if req.method == "POST" {
            return Reply::echo(req)
                .header("location", "/p/b")
                .header("content-location", "c");
        }
        echo(req, &[("cache-control", "max-age=60")])
    });
    let s = setup(config(), &script).await;
    for path in ["/p/b", "/p/c"] {
        s.proxy.get(path).send().await;
        assert_hit(&s.proxy.get(path).send().await);
    }
    s.proxy.post("/p/a").send().await;
    assert_x_cache(&s.proxy.get("/p/b").send().await, "MISS");
    assert_x_cache(&s.proxy.get("/p/c").send().await, "MISS");

    // Another origin's URI is left alone.
    script.set(|req| {
        if req.method == "POST" {
            return Reply::echo(req).header("location", "http://elsewhere.example/p/b");
        }
        echo(req, &[("cache-control", "max-age=60")])
    });
    s.proxy.get("/p/b").send().await;
    s.proxy.post("/p/a").send().await;
    assert_hit(&s.proxy.get("/p/b").send().await);
}

#[tokio::test]
async fn an_error_answer_to_an_unsafe_method_invalidates_nothing() {
    let script = Script::new(|req| {
        if req.method == "DELETE" {
            return Reply::echo(req).status(500);
        }
        echo(req, &[("cache-control", "max-age=60")])
    });
    let s = setup(config(), &script).await;
    let get = s.proxy.get("/p/a");
    get.send().await;
    s.proxy.request("DELETE", "/p/a").send().await;
    assert_hit(&get.send().await);
}

// ---- HEAD, Age, stored headers ---------------------------------------------

#[tokio::test]
async fn head_is_answered_from_a_stored_get() {
    let s = setup_static(&[("cache-control", "max-age=60")]).await;
    let get = s.proxy.get("/p/a");
    let full = get.send().await;
    let head = s.proxy.request("HEAD", "/p/a").send().await;
    assert_hit(&head);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-type"), full.header("content-type"));
    assert_eq!(s.backend.count(), 1);

    // A HEAD miss is fetched as GET and stored for later GETs.
    let head = s.proxy.request("HEAD", "/p/b").send().await;
    assert_miss_stored(&head);
    assert_eq!(s.backend.last().method, "GET");
    assert_hit(&s.proxy.get("/p/b").send().await);
}

#[tokio::test]
async fn hop_by_hop_and_connection_listed_headers_are_never_stored() {
    let s = setup_static(&[
        ("cache-control", "max-age=60"),
        ("connection", "x-private"),
        ("x-private", "secret"),
        ("keep-alive", "timeout=5"),
        ("upgrade", "h2c"),
        ("proxy-authenticate", "Basic"),
        ("x-kept", "yes"),
    ])
    .await;
    let get = s.proxy.get("/p/a");
    get.send().await;
    let hit = get.send().await;
    assert_hit(&hit);
    for gone in ["x-private", "keep-alive", "upgrade", "proxy-authenticate"] {
        assert!(hit.header(gone).is_none(), "{gone} replayed: {hit:?}");
    }
    assert_eq!(hit.header("x-kept"), Some("yes"));
}

#[tokio::test]
async fn different_query_strings_are_different_entries() {
    let s = setup_static(&[("cache-control", "max-age=60")]).await;
    s.proxy.get("/p/a?x=1").send().await;
    assert_x_cache(&s.proxy.get("/p/a?x=2").send().await, "MISS");
    assert_hit(&s.proxy.get("/p/a?x=1").send().await);
}

#[tokio::test]
async fn byte_ranges_are_served_from_a_stored_complete_answer() {
    let s = setup(
        config(),
        &Script::new(|req| {
            Reply::echo(req)
                .header("cache-control", "max-age=60")
                .body("0123456789A")
        }),
    )
    .await;
    let get = s.proxy.get("/p/a");
    get.send().await;
    for (range, body, content_range) in [
        ("bytes=0-1", "01", "bytes 0-1/11"),
        ("bytes=1-", "123456789A", "bytes 1-10/11"),
        ("bytes=-1", "A", "bytes 10-10/11"),
    ] {
        let resp = get.clone().header("range", range).send().await;
        assert_eq!(resp.status, 206, "{range}");
        assert_eq!(resp.body, body.as_bytes(), "{range}");
        assert_eq!(resp.header("content-range"), Some(content_range));
        assert_x_cache(&resp, "HIT");
    }
    let unsatisfiable = get.clone().header("range", "bytes=50-").send().await;
    assert_eq!(unsatisfiable.status, 416);
    assert_eq!(unsatisfiable.header("content-range"), Some("bytes */11"));
    let several = get.clone().header("range", "bytes=0-1,3-4").send().await;
    assert_eq!(several.status, 200, "several ranges get the whole answer");
    assert_eq!(s.backend.count(), 1);
}

#[tokio::test]
async fn surrogate_control_for_leafcache_replaces_cache_control() {
    let s = setup_static(&[
        ("cache-control", "no-store"),
        ("surrogate-control", "max-age=60;leafcache"),
    ])
    .await;
    let get = s.proxy.get("/p/a");
    let first = get.send().await;
    assert_miss_stored(&first);
    assert!(first.header("surrogate-control").is_none(), "not passed on");
    assert_eq!(
        s.backend.last().header("surrogate-capability"),
        Some("leafcache=\"Surrogate/1.0\"")
    );
    assert_hit(&get.send().await);

    // Directives for another surrogate are not ours: Cache-Control rules.
    let s = setup_static(&[
        ("cache-control", "no-store"),
        ("surrogate-control", "max-age=60;elsewhere"),
    ])
    .await;
    let get = s.proxy.get("/p/a");
    get.send().await;
    assert_x_cache(&get.send().await, "MISS");
}

// ---- "route" routes share the machinery where it applies --------------------

#[tokio::test]
async fn a_route_route_revalidates_a_stale_entry_that_has_validators() {
    let script = Script::new(|req| {
        if req.header("if-none-match") == Some("\"v1\"") {
            return Reply::echo(req)
                .status(304)
                .body("")
                .header("x-version", "2");
        }
        echo(req, &[("etag", "\"v1\""), ("x-version", "1")])
    });
    let config = ProxyConfig::new().route(
        Route::new("catalog")
            .set("path_prefix", r#""/c/""#)
            .set("ttl", r#""1s""#)
            .scope("global"),
    );
    let s = setup(config, &script).await;
    let get = s.proxy.get("/c/a");
    let first = get.send().await;
    assert_miss_stored(&first);
    let hit = get.send().await;
    assert_hit(&hit);
    let revalidated = until_not_hit(&get).await;
    assert_x_cache(&revalidated, "REVALIDATED");
    assert_eq!(revalidated.body, first.body, "the stored body");
    assert_eq!(revalidated.header("x-version"), Some("2"));
    assert_eq!(s.backend.last().header("if-none-match"), Some("\"v1\""));
    assert_hit(&get.send().await);
    assert_eq!(s.backend.count(), 2);
}

#[tokio::test]
async fn a_route_route_without_validators_fetches_again_as_before() {
    let config = ProxyConfig::new().route(
        Route::new("catalog")
            .set("path_prefix", r#""/c/""#)
            .set("ttl", r#""1s""#)
            .scope("global"),
    );
    let s = setup(config, &Script::new(|req| echo(req, &[]))).await;
    let get = s.proxy.get("/c/a");
    get.send().await;
    let again = until_not_hit(&get).await;
    assert_miss_stored(&again);
    assert!(s.backend.last().header("if-none-match").is_none());
}

#[tokio::test]
async fn a_qualified_no_cache_keeps_only_the_named_fields_out_of_the_stored_copy() {
    let s = setup_static(&[
        ("cache-control", "no-cache=\"x-secret\", max-age=60"),
        ("x-secret", "1"),
        ("x-kept", "2"),
    ])
    .await;
    let get = s.proxy.get("/p/a");
    let first = get.send().await;
    assert_miss_stored(&first);
    assert_eq!(
        first.header("x-secret"),
        Some("1"),
        "the fetching client gets it"
    );
    let hit = get.send().await;
    assert_hit(&hit);
    assert!(hit.header("x-secret").is_none(), "{hit:?}");
    assert_eq!(hit.header("x-kept"), Some("2"));
}
