//! What the search log needs of an answer's search facts, derived once per
//! answer and shared by every logged hit of it.
//!
//! A cached answer's [`SearchMeta`] is one `Arc` shared by all its hits, so
//! the de-duplicated product and supplier lists and the three JSON values of
//! `search:<id>` are computed the first time the answer is logged and reused
//! after that: a hit costs the writer no JSON building and no
//! de-duplication.

use std::sync::OnceLock;

use super::SearchMeta;

/// The derived facts of one answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogFacts {
    /// Indices into `SearchMeta::products` of each distinct product id, first
    /// occurrence first.
    products: Vec<usize>,
    /// Indices into `SearchMeta::products` of the first product of each
    /// distinct supplier: a supplier counts once per search.
    suppliers: Vec<usize>,
    /// `product_ids` of `search:<id>`: a JSON array.
    pub product_ids_json: String,
    /// `supplier_ids`: a JSON array.
    pub supplier_ids_json: String,
    /// `product_suppliers` as the record stores it: for each product of
    /// `product_ids`, the index in `supplier_ids` of its supplier (that of
    /// its first listing with one), or null. A JSON array.
    pub supplier_of_json: String,
    /// A hash of what the analytics counters count of a search with this
    /// answer (intent, distinct products and suppliers, whether it found
    /// nothing), so that searches alike are summed with one cheap lookup
    /// (`Counters::fold` of the search log).
    pub fingerprint: u64,
}

impl LogFacts {
    fn derive(meta: &SearchMeta) -> LogFacts {
        let items = &meta.products;
        let mut products: Vec<usize> = Vec::with_capacity(items.len());
        let mut suppliers: Vec<usize> = Vec::new();
        for (i, (product, supplier)) in items.iter().enumerate() {
            if !products.iter().any(|&j| items[j].0 == *product) {
                products.push(i);
            }
            if let Some(s) = supplier
                && !suppliers.iter().any(|&j| items[j].1.as_ref() == Some(s))
            {
                suppliers.push(i);
            }
        }
        let mut product_ids_json = String::with_capacity(2 + 16 * products.len());
        write_json_list(
            &mut product_ids_json,
            products.iter().map(|&i| items[i].0.as_str()),
        );
        let mut supplier_ids_json = String::with_capacity(2 + 16 * suppliers.len());
        write_json_list(
            &mut supplier_ids_json,
            suppliers.iter().filter_map(|&i| items[i].1.as_deref()),
        );
        // A product listed twice takes the supplier of its first listing
        // that has one.
        let mut pairs = String::with_capacity(2 + 3 * products.len());
        pairs.push('[');
        for (n, &first) in products.iter().enumerate() {
            if n > 0 {
                pairs.push(',');
            }
            let product = &items[first].0;
            let supplier = items[first..]
                .iter()
                .filter(|(p, _)| p == product)
                .find_map(|(_, s)| s.as_ref());
            let index = supplier.and_then(|s| {
                suppliers
                    .iter()
                    .position(|&j| items[j].1.as_ref() == Some(s))
            });
            match index {
                Some(i) => pairs.push_str(itoa::Buffer::new().format(i)),
                None => pairs.push_str("null"),
            }
        }
        pairs.push(']');
        // Held for as long as the answer is cached: no slack.
        for text in [&mut product_ids_json, &mut supplier_ids_json, &mut pairs] {
            text.shrink_to_fit();
        }
        products.shrink_to_fit();
        suppliers.shrink_to_fit();
        let fingerprint = {
            use std::hash::BuildHasher as _;
            foldhash::fast::FixedState::default().hash_one((
                &meta.intent,
                meta.results_count == 0,
                &product_ids_json,
                &supplier_ids_json,
            ))
        };
        LogFacts {
            products,
            suppliers,
            product_ids_json,
            supplier_ids_json,
            supplier_of_json: pairs,
            fingerprint,
        }
    }
}

impl LogFacts {
    /// What [`LogFacts::derive`] will allocate for `meta`, without deriving
    /// (for the L1 byte budget): three JSON texts naming every id once or
    /// twice, and two index lists. Kept next to `derive`, which it predicts.
    pub fn predicted_heap_bytes(meta: &SearchMeta) -> usize {
        use super::alloc_size;
        let n = meta.products.len();
        let ids: usize = meta
            .products
            .iter()
            .map(|(p, s)| p.len() + s.as_ref().map_or(0, String::len))
            .sum();
        // Ids quoted once each (suppliers at most once), an index or a null
        // per product.
        alloc_size(ids + 6 * n + 4) + alloc_size(5 * n + 2) + 16 + 2 * alloc_size(8 * n)
    }

    /// The heap these facts hold (for the L1 byte budget).
    pub fn heap_bytes(&self) -> usize {
        use super::alloc_size;
        alloc_size(self.products.capacity() * 8)
            + alloc_size(self.suppliers.capacity() * 8)
            + alloc_size(self.product_ids_json.capacity())
            + alloc_size(self.supplier_ids_json.capacity())
            + alloc_size(self.supplier_of_json.capacity())
    }
}

/// The lazily derived [`LogFacts`] a [`SearchMeta`] carries.
///
/// Not part of the meta's identity: two metas with the same search facts
/// are equal whether or not either has been logged yet, and the facts are
/// never serialized (they are derived again from the meta).
#[derive(Clone, Default)]
pub struct LazyFacts(OnceLock<LogFacts>);

impl PartialEq for LazyFacts {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for LazyFacts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "LazyFacts(derived)"
        } else {
            "LazyFacts(pending)"
        })
    }
}

impl LazyFacts {
    /// The facts, if derived already.
    pub fn get(&self) -> Option<&LogFacts> {
        self.0.get()
    }
}

impl SearchMeta {
    /// The log's view of these facts, derived on first use.
    pub fn log_facts(&self) -> &LogFacts {
        self.facts.0.get_or_init(|| LogFacts::derive(self))
    }

    /// Product ids de-duplicated, first occurrence first.
    pub fn product_ids(&self) -> impl Iterator<Item = &str> {
        let facts = self.log_facts();
        facts.products.iter().map(|&i| self.products[i].0.as_str())
    }

    /// Supplier ids de-duplicated: a supplier counts once per search however
    /// many of its products match.
    pub fn supplier_ids(&self) -> impl Iterator<Item = &str> {
        let facts = self.log_facts();
        facts
            .suppliers
            .iter()
            .filter_map(|&i| self.products[i].1.as_deref())
    }
}

/// Writes `s` as a JSON string (RFC 8259 escaping).
pub fn write_json_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            let _ = std::fmt::Write::write_fmt(out, format_args!("\\u{b:04x}"));
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

fn write_json_list<'a>(out: &mut String, items: impl Iterator<Item = &'a str>) {
    out.push('[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_json_str(out, item);
    }
    out.push(']');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::answer::meta_showing as meta;

    #[test]
    fn the_size_of_facts_to_come_is_predicted_and_then_counted() {
        let ids: Vec<(String, Option<String>)> = (0..12)
            .map(|i| (format!("prod-{i:05}"), Some(format!("sup-{}", i % 4))))
            .collect();
        let refs: Vec<(&str, Option<&str>)> = ids
            .iter()
            .map(|(p, s)| (p.as_str(), s.as_deref()))
            .collect();
        let m = meta(&refs);
        let before = m.heap_bytes();
        let predicted = m.facts_to_come();
        let derived = m.log_facts().heap_bytes();
        assert!(
            predicted * 4 >= derived * 3 && predicted <= derived * 2,
            "predicted {predicted} bytes, derived {derived}"
        );
        assert_eq!(m.facts_to_come(), 0, "nothing more to come");
        assert_eq!(m.heap_bytes(), before + derived, "now counted as held");
    }

    #[test]
    fn json_strings_are_escaped_as_serde_json_does() {
        for s in [
            "plain",
            "quo\"te",
            "back\\slash",
            "new\nline",
            "\u{1}ctl",
            "ünï",
            "tab\t",
        ] {
            let mut ours = String::new();
            write_json_str(&mut ours, s);
            assert_eq!(ours, serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn products_and_suppliers_are_deduplicated_in_result_order() {
        let m = meta(&[
            ("p1", Some("s1")),
            ("p2", Some("s1")),
            ("p1", Some("s2")),
            ("p3", None),
            ("p4", Some("s\"2")),
        ]);
        assert_eq!(
            m.product_ids().collect::<Vec<_>>(),
            ["p1", "p2", "p3", "p4"]
        );
        assert_eq!(m.supplier_ids().collect::<Vec<_>>(), ["s1", "s2", "s\"2"]);
        let facts = m.log_facts();
        let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
        assert_eq!(
            parse(&facts.product_ids_json),
            json!(["p1", "p2", "p3", "p4"])
        );
        assert_eq!(parse(&facts.supplier_ids_json), json!(["s1", "s2", "s\"2"]));
        // p1 and p2 are s1's (index 0), p3 has none, p4 is s"2's (index 2).
        assert_eq!(parse(&facts.supplier_of_json), json!([0, 0, null, 2]));
    }

    #[test]
    fn a_product_first_listed_without_supplier_takes_a_later_one() {
        let m = meta(&[("p1", None), ("p1", Some("s1"))]);
        let facts = m.log_facts();
        assert_eq!(facts.supplier_of_json, "[0]");
        assert_eq!(facts.product_ids_json, r#"["p1"]"#);
    }

    #[test]
    fn no_products_give_empty_json_values() {
        let facts = meta(&[]).log_facts().clone();
        assert_eq!(facts.product_ids_json, "[]");
        assert_eq!(facts.supplier_ids_json, "[]");
        assert_eq!(facts.supplier_of_json, "[]");
    }

    #[test]
    fn derived_facts_do_not_change_equality() {
        let a = meta(&[("p1", Some("s1"))]);
        let b = a.clone();
        let _ = a.log_facts();
        assert_eq!(a, b);
    }
}
