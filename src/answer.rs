//! What a search answer says: its intent, confidence and products, read once
//! through the route's JSON pointers when the answer is fetched, and kept in
//! the cache envelope so hits never parse the body again.

use serde_json::Value;

use crate::cache::envelope::SearchMeta;
use crate::config::RouteConfig;
use crate::route::json_pointer;

/// Reads the search facts of a backend answer. A body that is not JSON, or
/// lacks the fields, gives empty facts: the answer is still served.
pub fn read(route: &RouteConfig, body: &[u8]) -> SearchMeta {
    match serde_json::from_slice::<Value>(body) {
        Ok(doc) => read_value(route, &doc),
        Err(_) => SearchMeta::default(),
    }
}

pub fn read_value(route: &RouteConfig, doc: &Value) -> SearchMeta {
    let intent = json_pointer(doc, &route.intent).and_then(scalar_text);
    let confidence = json_pointer(doc, &route.confidence).and_then(Value::as_f64);
    let results = json_pointer(doc, &route.results).and_then(Value::as_array);
    let products = results
        .map(|items| {
            // Sized once: the list lives as long as the cached answer.
            let mut products = Vec::with_capacity(items.len());
            products.extend(items.iter().filter_map(|item| {
                let id = json_pointer(item, &route.product_id).and_then(scalar_text)?;
                let supplier = json_pointer(item, &route.supplier_id).and_then(scalar_text);
                Some((id, supplier))
            }));
            products.shrink_to_fit();
            products
        })
        .unwrap_or_default();
    SearchMeta {
        intent,
        confidence,
        results_count: results.map_or(0, |r| r.len().min(u32::MAX as usize) as u32),
        products,
        facts: Default::default(),
    }
}

/// Strings as they are, numbers as their text; anything else is absent.
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}
