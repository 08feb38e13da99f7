//! Assertions shared by the themes: the X-Cache and Cache-Status forms of the
//! contract.

use super::Resp;

/// A lookup that missed and whose answer was stored:
/// `leafcache; fwd=uri-miss; stored; key="<hash>"`, params in that order.
#[track_caller]
pub fn assert_miss_stored(resp: &Resp) {
    assert_eq!(resp.status, 200, "status of {resp:?}");
    assert_eq!(resp.x_cache(), Some("MISS"), "X-Cache of {resp:?}");
    let cs = resp.cache_status();
    let key = cs.key();
    assert_eq!(
        cs.raw,
        format!("leafcache; fwd=uri-miss; stored; key=\"{key}\"")
    );
}

/// A lookup that missed and whose answer was not stored:
/// `leafcache; fwd=uri-miss; key="<hash>"`, plus `detail=hit-for-pass` when
/// the key was in hit-for-pass (where that param goes is left open).
#[track_caller]
pub fn assert_miss_not_stored(resp: &Resp) {
    assert_eq!(resp.x_cache(), Some("MISS"), "X-Cache of {resp:?}");
    let cs = resp.cache_status();
    let key = cs.key();
    assert_eq!(
        cs.without(&["detail"]),
        format!("leafcache; fwd=uri-miss; key=\"{key}\""),
        "in {:?}",
        cs.raw
    );
    assert!(
        matches!(cs.get("detail"), None | Some("hit-for-pass")),
        "{:?}",
        cs.raw
    );
}

/// A hit: `leafcache; hit; ttl=<seconds>; key="<hash>"` and an Age header.
#[track_caller]
pub fn assert_hit(resp: &Resp) {
    assert_eq!(resp.x_cache(), Some("HIT"), "X-Cache of {resp:?}");
    let cs = resp.cache_status();
    let key = cs.key();
    let ttl = cs.ttl();
    assert_eq!(cs.raw, format!("leafcache; hit; ttl={ttl}; key=\"{key}\""));
    let age = resp
        .header("age")
        .unwrap_or_else(|| panic!("no Age on a hit: {resp:?}"));
    age.parse::<u64>()
        .unwrap_or_else(|_| panic!("Age is a number of seconds: {age:?}"));
}

/// A bypass: `leafcache; fwd=bypass; detail=<reason>`.
#[track_caller]
pub fn assert_bypass(resp: &Resp, detail: &str) {
    assert_eq!(resp.x_cache(), Some("BYPASS"), "X-Cache of {resp:?}");
    assert_eq!(
        resp.cache_status().raw,
        format!("leafcache; fwd=bypass; detail={detail}")
    );
}
