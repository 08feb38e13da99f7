//! Which generation a new variant of an origin entry joins (docs/contract.md
//! section 3b, `Vary`): a leaf the miss pipeline and the origin lookup share.

use std::sync::Arc;

use crate::cache::envelope::Variant;
use crate::http_cache::vary;

fn same_names(a: &vary::Selection, b: &vary::Selection) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|((x, _), (y, _))| x == y)
}

/// The generation a new variant joins: its URI entry's, when that varies
/// by the same names; else a new one.
pub(in crate::proxy) fn variant_generation(
    primary: Option<&Option<Arc<Variant>>>,
    selection: &vary::Selection,
) -> u64 {
    primary
        .and_then(Option::as_ref)
        .filter(|v| same_names(&v.selection, selection))
        .map_or_else(new_generation, |v| v.generation)
}

fn new_generation() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0
}
