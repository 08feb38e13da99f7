//! Tags of a stored answer (docs/contract.md section 9): the products and suppliers its
//! results show, so that `purge --product P` finds exactly the answers that
//! show P without scanning the cache.
//!
//! Each tag is a zset in Redis (`cache:tag:product:<id>`,
//! `cache:tag:supplier:<id>`): member the cache key, score the time (ms) the
//! entry expires. A store adds the key to each of its tags, drops the members
//! whose entries have expired, and moves the index's own expiry out to the
//! latest of its entries: an index lives exactly as long as something it
//! names, and never holds more than the live entries plus those that
//! expired since its last write. This module says which indexes; the
//! commands that file a key are the Redis tier's (`redis::tier`).
//!
//! The index cost per answer is bounded: an answer that shows more than
//! [`TAGS_MAX`] distinct products and suppliers is filed under one
//! `cache:tag:overflow` index instead, which every tag purge also reads. A
//! purge checks each candidate's stored answer before touching it, so an
//! index member whose key was since stored again with other results is only
//! dropped from the index.

use crate::answer::SearchMeta;
use crate::redis::keys;

/// Tag index entries one answer may add; past this, the answer is filed
/// under the overflow index alone.
pub const TAGS_MAX: usize = 64;

/// What a tag purge matches: answers that show any of these products, or
/// any product of these suppliers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tagged {
    Products(Vec<String>),
    Suppliers(Vec<String>),
}

impl Tagged {
    /// Whether an answer with these search facts shows what is named.
    pub fn shown_by(&self, meta: &SearchMeta) -> bool {
        match self {
            Tagged::Products(ids) => meta.products.iter().any(|(p, _)| ids.contains(p)),
            Tagged::Suppliers(ids) => meta
                .products
                .iter()
                .any(|(_, s)| s.as_ref().is_some_and(|s| ids.contains(s))),
        }
    }

    /// The index keys a purge reads: one per id, and the overflow index.
    pub fn index_keys(&self, prefix: &str) -> Vec<String> {
        let mut out: Vec<String> = match self {
            Tagged::Products(ids) => ids.iter().map(|p| keys::product_tag(prefix, p)).collect(),
            Tagged::Suppliers(ids) => ids.iter().map(|s| keys::supplier_tag(prefix, s)).collect(),
        };
        out.push(keys::overflow_tag(prefix));
        out
    }
}

/// The tag index keys an answer is filed under: its distinct products and
/// suppliers, or the overflow index when they are more than [`TAGS_MAX`];
/// none for an answer without products.
pub fn index_keys_of(meta: &SearchMeta, prefix: &str) -> Vec<String> {
    if meta.products.is_empty() {
        return Vec::new();
    }
    // The de-duplicated lists the search log derives once per answer.
    if meta.product_ids().count() + meta.supplier_ids().count() > TAGS_MAX {
        return vec![keys::overflow_tag(prefix)];
    }
    let products = meta.product_ids().map(|p| keys::product_tag(prefix, p));
    let suppliers = meta.supplier_ids().map(|s| keys::supplier_tag(prefix, s));
    products.chain(suppliers).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::meta_showing as meta;

    #[test]
    fn an_answer_is_filed_under_each_distinct_product_and_supplier() {
        let m = meta(&[
            ("p1", Some("s1")),
            ("p2", Some("s1")),
            ("p1", None),
            ("p3", None),
        ]);
        assert_eq!(
            index_keys_of(&m, "x:"),
            [
                "x:cache:tag:product:p1",
                "x:cache:tag:product:p2",
                "x:cache:tag:product:p3",
                "x:cache:tag:supplier:s1"
            ]
        );
        assert!(index_keys_of(&meta(&[]), "").is_empty());
    }

    #[test]
    fn an_answer_with_too_many_tags_goes_to_the_overflow_index() {
        let ids: Vec<String> = (0..=TAGS_MAX).map(|i| format!("p{i}")).collect();
        let m = meta(&ids.iter().map(|p| (p.as_str(), None)).collect::<Vec<_>>());
        assert_eq!(index_keys_of(&m, ""), ["cache:tag:overflow"]);
        // Every purge reads the overflow index too.
        let purge = Tagged::Products(vec![ids[TAGS_MAX].clone()]);
        assert!(
            purge
                .index_keys("")
                .contains(&"cache:tag:overflow".to_string())
        );
        assert!(purge.shown_by(&m));
    }

    #[test]
    fn ids_match_literally() {
        let m = meta(&[("p*", Some("s?"))]);
        assert!(Tagged::Products(vec!["p*".into()]).shown_by(&m));
        assert!(!Tagged::Products(vec!["p".into()]).shown_by(&m));
        assert!(!Tagged::Products(vec!["s?".into()]).shown_by(&m));
        assert!(Tagged::Suppliers(vec!["s?".into()]).shown_by(&m));
        assert!(!Tagged::Suppliers(vec!["s".into()]).shown_by(&m));
    }
}
