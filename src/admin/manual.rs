//! Manual logging (docs/contract.md section 5): a search that did not pass through the
//! proxy, sent by the application with the fields of the original
//! `log_search`, becomes a [`SearchEvent`] with route `manual` and cache
//! `none`, written by the same writer as proxied searches.

use std::sync::Arc;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::fields::{self, BadField};
use crate::answer::SearchMeta;
use crate::config::IdentityConfig;
use crate::events::{CacheResult, SearchEvent, new_search_id};
use crate::time::now_ms;

/// The route name of manually logged searches.
pub const ROUTE: &str = "manual";

/// Reads a manual search. `results` (objects with `product_id` and
/// `supplier`) gives the products; `results_count`, when given, is the count
/// either way.
pub fn from_json(
    obj: &Map<String, Value>,
    identity: &IdentityConfig,
) -> Result<SearchEvent, BadField> {
    let query = fields::req_str(obj, "query")?;
    // An empty (or blank) user id means no user, as the proxy reads one: no
    // `user::searches`, no profile. Checked before hashing, which would turn
    // "" into an id like any other.
    let user_id = optional_text(obj, "user_id")?.map(|raw| {
        // The same id a proxied search of this user is logged under, so
        // both land in one history.
        if identity.hash_user_id {
            hex::encode(Sha256::digest(raw.as_bytes()))
        } else {
            raw
        }
    });
    let user_uuid = optional_text(obj, "user_uuid")?;
    let session_id = optional_text(obj, "session_id")?;
    // The bound the proxy holds its requests to: an id past it would name
    // Redis keys (history, profile) of any length.
    for (name, value) in [
        ("user_id", &user_id),
        ("user_uuid", &user_uuid),
        ("session_id", &session_id),
    ] {
        if value.as_ref().is_some_and(|v| v.len() > identity.max_bytes) {
            let max = identity.max_bytes;
            return Err(BadField::new(
                name,
                format!("must be at most [identity] max_bytes ({max} bytes)"),
            ));
        }
    }
    let intent = optional_text(obj, "intent")?;
    let confidence = fields::opt_f64(obj, "confidence")?;
    let response_time_ms = fields::opt_non_negative_f64(obj, "response_time_ms")?.unwrap_or(0.0);
    let products = match obj.get("results").filter(|v| !v.is_null()) {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| result(i, item))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(BadField::new("results", "must be a list of objects")),
    };
    let results_count = match fields::opt_count(obj, "results_count")? {
        Some(n) => n,
        None => u32::try_from(products.len()).unwrap_or(u32::MAX),
    };
    let query_normalized = crate::key::normalize_query(&query);
    Ok(SearchEvent {
        search_id: new_search_id(),
        timestamp_ms: now_ms(),
        user_id,
        user_uuid,
        session_id,
        query,
        query_normalized,
        meta: Arc::new(SearchMeta {
            intent,
            confidence,
            results_count,
            products,
            unreadable: None,
            facts: Default::default(),
        }),
        response_time_ms,
        cache: CacheResult::None,
        status: 0,
        route: Arc::from(ROUTE),
    })
}

/// An optional text field where blank means absent, as the proxy reads
/// identity fields.
fn optional_text(obj: &Map<String, Value>, name: &str) -> Result<Option<String>, BadField> {
    Ok(fields::opt_str(obj, name)?.filter(|s| !fields::is_blank(s)))
}

fn result(i: usize, item: &Value) -> Result<(String, Option<String>), BadField> {
    let name = |f: &str| format!("results[{i}].{f}");
    let Value::Object(obj) = item else {
        return Err(BadField::new(format!("results[{i}]"), "must be an object"));
    };
    let rename = |mut e: BadField| {
        e.field = name(&e.field);
        e
    };
    let product = fields::req_id(obj, "product_id").map_err(rename)?;
    let supplier = fields::opt_id(obj, "supplier").map_err(rename)?;
    Ok((product, supplier))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn identity() -> IdentityConfig {
        IdentityConfig {
            user_id: vec![],
            user_uuid: vec![],
            session_id: vec![],
            hash_user_id: false,
            max_bytes: 256,
        }
    }

    fn parse(v: Value) -> Result<SearchEvent, BadField> {
        from_json(v.as_object().unwrap(), &identity())
    }

    #[test]
    fn results_count_wins_over_the_results_list() {
        let ev = parse(json!({
            "query": "Organic  Milk",
            "results": [{"product_id": "p1", "supplier": "s1"}, {"product_id": 2}],
            "results_count": 40,
        }))
        .unwrap();
        assert_eq!(ev.meta.results_count, 40);
        assert_eq!(ev.meta.products.len(), 2);
        assert_eq!(ev.query_normalized, "organic milk");
        assert_eq!(ev.cache, CacheResult::None);
        assert_eq!(&*ev.route, "manual");
        let ev = parse(json!({"query": "q", "results": [{"product_id": "p1"}]})).unwrap();
        assert_eq!(ev.meta.results_count, 1);
    }

    #[test]
    fn a_blank_user_id_is_no_user_even_when_ids_are_hashed() {
        let hashed = IdentityConfig {
            hash_user_id: true,
            ..identity()
        };
        for raw in ["", " "] {
            let body = json!({"query": "q", "user_id": raw, "session_id": raw, "intent": raw});
            let ev = from_json(body.as_object().unwrap(), &hashed).unwrap();
            assert_eq!(ev.user_id, None, "{raw:?}");
            assert_eq!(ev.session_id, None);
            assert_eq!(ev.meta.intent, None);
        }
    }

    #[test]
    fn an_id_past_max_bytes_is_a_bad_field() {
        let long = "u".repeat(257);
        for name in ["user_id", "user_uuid", "session_id"] {
            let err = parse(json!({"query": "milk", name: long})).unwrap_err();
            assert_eq!(err.field, name);
        }
        let fits = "u".repeat(256);
        assert!(parse(json!({"query": "milk", "user_id": fits})).is_ok());
    }

    #[test]
    fn each_bad_field_is_named() {
        for (body, field) in [
            (json!({}), "query"),
            (json!({"query": 1}), "query"),
            (json!({"query": "q", "user_id": 5}), "user_id"),
            (json!({"query": "q", "confidence": "high"}), "confidence"),
            (
                json!({"query": "q", "response_time_ms": "3"}),
                "response_time_ms",
            ),
            (json!({"query": "q", "results_count": -1}), "results_count"),
            (json!({"query": "q", "results": {}}), "results"),
            (
                json!({"query": "q", "results": [{}]}),
                "results[0].product_id",
            ),
            (
                json!({"query": "q", "results": [{"product_id": "p", "supplier": []}]}),
                "results[0].supplier",
            ),
            (
                json!({"query": "q", "results": [{"product_id": ""}]}),
                "results[0].product_id",
            ),
            (
                json!({"query": "q", "results": [{"product_id": "p", "supplier": ""}]}),
                "results[0].supplier",
            ),
            (
                json!({"query": "q", "response_time_ms": -3}),
                "response_time_ms",
            ),
        ] {
            assert_eq!(parse(body.clone()).unwrap_err().field, field, "{body}");
        }
    }
}
