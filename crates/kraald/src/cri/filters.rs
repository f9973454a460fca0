//! Label selectors of the List calls: every key must be present with the given value.

use std::collections::{BTreeMap, HashMap};

pub fn labels_match(selector: &HashMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The id filter accepts a full id or a prefix, as crictl users type them.
pub fn id_matches(filter: &str, id: &str) -> bool {
    filter.is_empty() || id.starts_with(filter)
}
