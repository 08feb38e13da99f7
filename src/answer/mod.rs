//! What a search answer says: its intent, confidence and products, read once
//! through the route's JSON pointers when the answer is fetched, and kept in
//! the cache envelope so hits never parse the body again.

pub mod facts;

use serde_json::Value;

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

/// What a search answer said, read once when it was fetched.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SearchMeta {
    pub intent: Option<String>,
    pub confidence: Option<f64>,
    /// Number of results as returned.
    pub results_count: u32,
    /// Product ids in result order, each with its supplier when known.
    pub products: Vec<(String, Option<String>)>,
    /// What the search log derives from these facts, once per answer rather
    /// than once per logged hit (see [`facts`]).
    #[serde(skip)]
    pub facts: facts::LazyFacts,
}

/// What an allocation of `n` bytes takes: small ones are rounded up to a
/// 16-byte size class (mimalloc's are finer, glibc's are 16 plus a header).
pub fn alloc_size(n: usize) -> usize {
    if n == 0 { 0 } else { (n + 15) & !15 }
}

impl SearchMeta {
    /// The heap the meta holds, its log facts included once derived.
    pub fn heap_bytes(&self) -> usize {
        let strings: usize = self
            .products
            .iter()
            .map(|(p, s)| {
                alloc_size(p.capacity()) + s.as_ref().map_or(0, |s| alloc_size(s.capacity()))
            })
            .sum();
        let list =
            alloc_size(self.products.capacity() * std::mem::size_of::<(String, Option<String>)>());
        let intent = self.intent.as_ref().map_or(0, |i| alloc_size(i.capacity()));
        let facts = self.facts.get().map_or(0, |f| f.heap_bytes());
        std::mem::size_of::<SearchMeta>() + 16 + list + strings + intent + facts
    }

    /// What deriving the log facts will add to [`SearchMeta::heap_bytes`]
    /// (0 once they are derived): the L1 tier of a proxy that logs counts it
    /// up front, since every answer it serves gets them.
    pub fn facts_to_come(&self) -> usize {
        match self.facts.get() {
            Some(_) => 0,
            None => facts::LogFacts::predicted_heap_bytes(self),
        }
    }
}

/// Search facts of an answer that shows these products, each with its
/// supplier when known (for unit tests).
#[cfg(test)]
pub(crate) fn meta_showing(products: &[(&str, Option<&str>)]) -> SearchMeta {
    SearchMeta {
        products: products
            .iter()
            .map(|(p, s)| (p.to_string(), s.map(str::to_string)))
            .collect(),
        ..Default::default()
    }
}
