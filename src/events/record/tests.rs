use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::answer::SearchMeta;
use crate::events::write::record_json;
use crate::events::{CacheResult, SearchEvent};

fn event(products: &[(&str, Option<&str>)]) -> SearchEvent {
    SearchEvent {
        search_id: crate::events::new_search_id(),
        timestamp_ms: 1_764_106_056_927,
        user_id: Some("u1".into()),
        user_uuid: None,
        session_id: Some("s\"1".into()),
        query: "Milk 2%".into(),
        query_normalized: "milk 2%".into(),
        meta: Arc::new(SearchMeta {
            intent: Some("product_search".into()),
            confidence: Some(0.875),
            results_count: 7,
            products: products
                .iter()
                .map(|(p, s)| (p.to_string(), s.map(str::to_string)))
                .collect(),
            ..SearchMeta::default()
        }),
        response_time_ms: 12.5,
        cache: CacheResult::Hit,
        status: 200,
        route: "search".into(),
    }
}

/// The export line of `ev` as stored, read back.
fn read_back(ev: &SearchEvent, feedback: &[&str]) -> Value {
    let id = ev.search_id.to_string();
    let record = Record::from_compact(&id, record_json(ev).as_bytes()).expect("reads back");
    let feedback: Vec<Vec<u8>> = feedback.iter().map(|f| f.as_bytes().to_vec()).collect();
    let mut out = Vec::new();
    record.write_line(&feedback, &mut out);
    assert_eq!(out.pop(), Some(b'\n'));
    serde_json::from_slice(&out).expect("a JSON line")
}

/// A UBI event of the export line of `ev`, as `ubi_events` has it.
fn ubi_event(ev: &SearchEvent, action: &str, product: &str, ordinal: Option<u64>) -> Value {
    let mut event = json!({
        "application": "search",
        "action_name": action,
        "query_id": ev.search_id.to_string(),
        "client_id": "u1",
        "session_id": "s\"1",
        "user_query": "Milk 2%",
        "timestamp": "t",
        "event_attributes": {
            "object": {"object_id": product, "object_id_field": "product_id"},
        },
    });
    if let Some(ordinal) = ordinal {
        event["event_attributes"]["position"] = json!({"ordinal": ordinal});
    }
    event
}

#[test]
fn a_stored_record_reads_back_as_every_field_of_the_export() {
    let ev = event(&[
        ("p1", Some("s1")),
        ("p2", None),
        ("p3", Some("s2")),
        ("p1", Some("s3")),
        ("p2", Some("s3")),
    ]);
    let line = read_back(
        &ev,
        &[
            r#"{"event":"click","product_id":"p1","position":1,"timestamp":"t"}"#,
            r#"{"event":"click","product_id":"p3","position":3,"timestamp":"t"}"#,
            r#"{"event":"purchase","product_id":"p3","position":null,"timestamp":"t"}"#,
        ],
    );
    assert_eq!(
        line,
        json!({
            "search_id": ev.search_id.to_string(),
            "timestamp": "2025-11-25T21:27:36.927Z",
            "user_id": "u1",
            "user_uuid": null,
            "session_id": "s\"1",
            "query": "Milk 2%",
            "query_normalized": "milk 2%",
            "intent": "product_search",
            "confidence": 0.875,
            "results_count": 7,
            "product_ids": ["p1", "p2", "p3"],
            "supplier_ids": ["s1", "s2", "s3"],
            // p2's first listing has no supplier; a later one does.
            "product_suppliers": {"p1": "s1", "p2": "s3", "p3": "s2"},
            "response_time_ms": 12.5,
            "cache": "hit",
            "status": 200,
            "route": "search",
            "answer_unreadable": null,
            "clicks": 2,
            "orders": 0,
            "purchases": 1,
            "feedback": [
                {"event": "click", "product_id": "p1", "position": 1, "timestamp": "t"},
                {"event": "click", "product_id": "p3", "position": 3, "timestamp": "t"},
                {"event": "purchase", "product_id": "p3", "position": null, "timestamp": "t"},
            ],
            "impressions": [
                {"product_id": "p1", "position": 1},
                {"product_id": "p2", "position": 2},
                {"product_id": "p3", "position": 3},
            ],
            "ubi": {
                "query": {
                    "application": "search",
                    "query_id": ev.search_id.to_string(),
                    "client_id": "u1",
                    "user_query": "Milk 2%",
                    "timestamp": "2025-11-25T21:27:36.927Z",
                    "object_id_field": "product_id",
                    "query_response_id": ev.search_id.to_string(),
                    "query_response_hit_ids": ["p1", "p2", "p3"],
                    "query_attributes": {
                        "session_id": "s\"1",
                        "query_normalized": "milk 2%",
                        "intent": "product_search",
                        "results_count": 7,
                    },
                },
                "events": [
                    ubi_event(&ev, "click", "p1", Some(1)),
                    ubi_event(&ev, "click", "p3", Some(3)),
                    // No position recorded: the impression's.
                    ubi_event(&ev, "purchase", "p3", Some(3)),
                ],
            },
        })
    );
    let record = Record::from_compact("id", record_json(&ev).as_bytes()).unwrap();
    let mut out = Vec::new();
    record.write_line(&[], &mut out);
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with("{\"search_id\":\"id\",\"timestamp\":"),
        "{text}"
    );
    assert!(
        text.contains(
            "\"route\":\"search\",\"answer_unreadable\":null,\"clicks\":0,\"orders\":0,\"purchases\":0,\"feedback\":[],\"impressions\":[{"
        ),
        "{text}"
    );
}

#[test]
fn what_a_search_lacks_is_left_out_and_reads_back_as_null() {
    let mut ev = event(&[]);
    ev.user_id = None;
    ev.session_id = None;
    ev.query_normalized = ev.query.clone();
    ev.status = 502;
    ev.cache = CacheResult::Miss;
    Arc::make_mut(&mut ev.meta).intent = None;
    Arc::make_mut(&mut ev.meta).confidence = Some(f64::NAN);
    let stored = record_json(&ev);
    assert_eq!(
        stored,
        r#"[1764106056927,"Milk 2%",null,null,null,null,7,[],[],[],12.500,"miss","search",502]"#
    );
    let line = read_back(&ev, &[]);
    assert_eq!(line["user_id"], Value::Null);
    assert_eq!(line["intent"], Value::Null);
    assert_eq!(line["confidence"], Value::Null);
    assert_eq!(line["query_normalized"], "Milk 2%");
    assert_eq!(line["status"], 502);
    assert_eq!(line["cache"], "miss");
    assert_eq!(line["product_ids"], json!([]));
    assert_eq!(line["supplier_ids"], json!([]));
    assert_eq!(line["product_suppliers"], json!({}));
    assert_eq!(line["clicks"], 0);
    assert_eq!(line["feedback"], json!([]));
}

#[test]
fn ten_products_make_a_record_of_a_few_hundred_bytes() {
    let products: Vec<(String, Option<String>)> = (0..10)
        .map(|i| {
            (
                format!("p{}", 10_000 + i * 7919),
                Some(format!("supplier-{}", i % 6)),
            )
        })
        .collect();
    let refs: Vec<(&str, Option<&str>)> = products
        .iter()
        .map(|(p, s)| (p.as_str(), s.as_deref()))
        .collect();
    let stored = record_json(&event(&refs));
    // Field names and the supplier of each product take a fraction of what
    // the hash's did (docs/contract.md section 4's names, product_suppliers as an object).
    assert!(stored.len() < 300, "{} bytes: {stored}", stored.len());
}

#[test]
fn values_a_later_version_adds_at_the_end_are_ignored() {
    let ev = event(&[("p1", Some("s1"))]);
    let stored = record_json(&ev);
    let id = ev.search_id.to_string();
    let longer = format!(
        "{},null,null,null,{{\"new\":1}}]",
        &stored[..stored.len() - 1]
    );
    assert_eq!(
        Record::from_compact(&id, longer.as_bytes()).unwrap(),
        Record::from_compact(&id, stored.as_bytes()).unwrap()
    );
}

#[test]
fn a_hash_record_of_an_earlier_version_reads_as_before() {
    let fields: HashMap<String, Vec<u8>> = [
        ("search_id", "s1"),
        ("query", "milk"),
        ("confidence", "0.9"),
        ("results_count", "3"),
        ("product_ids", "[\"p1\"]"),
        ("product_suppliers", "{\"p1\":\"s1\"}"),
        ("response_time_ms", "12.500"),
        ("status", "200"),
        ("clicks", "2"),
        ("app_field", "x"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
    .collect();
    let record = Record::from_hash(fields).expect("a record");
    let feedback =
        vec![br#"{"event":"click","product_id":"p1","position":1,"timestamp":"t"}"#.to_vec()];
    let mut out = Vec::new();
    record.write_line(&feedback, &mut out);
    assert_eq!(out.last(), Some(&b'\n'));
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["confidence"], 0.9);
    assert_eq!(v["results_count"], 3);
    assert_eq!(v["response_time_ms"], 12.5);
    assert_eq!(v["product_ids"][0], "p1");
    assert_eq!(v["product_suppliers"]["p1"], "s1");
    assert_eq!(v["user_id"], Value::Null);
    assert_eq!(v["intent"], Value::Null);
    // Counted from the feedback list, as for a compact record.
    assert_eq!(v["clicks"], 1);
    assert_eq!(v["orders"], 0);
    assert_eq!(v["app_field"], "x");
    assert_eq!(v["feedback"][0]["position"], 1);
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with("{\"search_id\":\"s1\",\"timestamp\":null"),
        "{text}"
    );
    assert!(Record::from_hash(HashMap::new()).is_none(), "a missing key");
}

#[test]
fn text_that_is_not_a_stored_record_is_an_error_not_a_panic() {
    for bad in [
        &b""[..],
        b"{}",
        b"[]",
        b"[\"x\"]",
        b"[1,2]",
        b"[1,\"q\"]",
        b"[1,\"q\",null,null,null,null,1,[1],[],[],1,\"hit\",\"r\"]",
        b"[1,\"q\",null,null,null,null,1,[],[],[\"x\"],1,\"hit\",\"r\"]",
        b"\xff\xfe",
        b"[1,\"q\"",
    ] {
        assert!(Record::from_compact("id", bad).is_err(), "{bad:?}");
    }
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9 ]{0,12}",
        any::<String>(),
        "[\"\\\\\u{0}-\u{1f}\u{7f}é✓]{0,8}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever a search holds, its stored record reads back as exactly
    /// its values.
    #[test]
    fn every_search_reads_back_as_it_was_logged(
        user in proptest::option::of(text()),
        uuid in proptest::option::of(text()),
        session in proptest::option::of(text()),
        query in text(),
        normalized in proptest::option::of(text()),
        intent in proptest::option::of(text()),
        confidence in proptest::option::of(-1e6f64..1e6),
        results in 0u32..100_000,
        products in proptest::collection::vec((text(), proptest::option::of(text())), 0..12),
        ms in 0f64..1e7,
        status in 100u16..600,
        route in "[a-z_-]{1,12}",
    ) {
        let ev = SearchEvent {
            search_id: crate::events::new_search_id(),
            timestamp_ms: 1_764_106_056_927,
            user_id: user.clone(),
            user_uuid: uuid.clone(),
            session_id: session.clone(),
            query: query.clone(),
            query_normalized: normalized.clone().unwrap_or_else(|| query.clone()),
            meta: Arc::new(SearchMeta {
                intent: intent.clone(),
                confidence,
                results_count: results,
                products: products.clone(),
                ..SearchMeta::default()
            }),
            response_time_ms: ms,
            cache: CacheResult::Stale,
            status,
            route: Arc::from(route.as_str()),
        };
        let line = read_back(&ev, &[]);
        let opt = |v: &Option<String>| v.clone().map_or(Value::Null, Value::String);
        prop_assert_eq!(&line["user_id"], &opt(&user));
        prop_assert_eq!(&line["user_uuid"], &opt(&uuid));
        prop_assert_eq!(&line["session_id"], &opt(&session));
        prop_assert_eq!(&line["query"], &json!(query));
        prop_assert_eq!(&line["query_normalized"], &json!(ev.query_normalized));
        prop_assert_eq!(&line["intent"], &opt(&intent));
        prop_assert_eq!(line["confidence"].as_f64(), confidence);
        prop_assert_eq!(&line["results_count"], &json!(results));
        let ids: Vec<&str> = ev.product_ids().collect();
        prop_assert_eq!(&line["product_ids"], &json!(ids));
        let suppliers: Vec<&str> = ev.supplier_ids().collect();
        prop_assert_eq!(&line["supplier_ids"], &json!(suppliers));
        // Each product's supplier: that of its first listing with one.
        let mut expected = serde_json::Map::new();
        for (p, s) in &products {
            if let Some(s) = s && !expected.contains_key(p) {
                expected.insert(p.clone(), json!(s));
            }
        }
        prop_assert_eq!(&line["product_suppliers"], &Value::Object(expected));
        prop_assert_eq!(line["response_time_ms"].as_f64(), Some(format!("{ms:.3}").parse::<f64>().unwrap()));
        prop_assert_eq!(&line["status"], &json!(status));
        prop_assert_eq!(&line["route"], &json!(route));
        prop_assert_eq!(&line["cache"], &json!("stale"));
    }
}

#[test]
fn a_ubi_event_has_no_position_when_neither_the_application_nor_the_impressions_give_one() {
    let ev = event(&[("p1", None)]);
    let line = read_back(
        &ev,
        &[
            r#"{"event":"click","product_id":"elsewhere","position":null,"timestamp":"t"}"#,
            r#"{"event":"click","product_id":"p1","position":0,"timestamp":"t"}"#,
        ],
    );
    let events = &line["ubi"]["events"];
    assert_eq!(events[0], ubi_event(&ev, "click", "elsewhere", None));
    // 0 is not a position (they count from 1): the impression's.
    assert_eq!(events[1], ubi_event(&ev, "click", "p1", Some(1)));
    assert_eq!(
        line["feedback"][1]["position"], 0,
        "the feedback as recorded"
    );
    assert_eq!(
        line["impressions"],
        json!([{"product_id": "p1", "position": 1}])
    );
}

#[test]
fn an_unreadable_answer_says_why_in_the_record() {
    let mut ev = event(&[]);
    ev.meta = Arc::new(SearchMeta {
        unreadable: Some(crate::answer::Unreadable::Coding),
        ..SearchMeta::default()
    });
    let json = record_json(&ev);
    assert!(json.ends_with(r#","coding"]"#), "{json}");
    let line = read_back(&ev, &[]);
    assert_eq!(line["answer_unreadable"], "coding");
    assert_eq!(line["intent"], Value::Null);
}
