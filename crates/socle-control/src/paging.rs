//! Pagination and filter helpers shared by the Read* operations.
//!
//! Results are sorted by creation date, then ID (as on Outscale). A
//! `NextPageToken` is the opaque, URL-safe base64 of the sort key of the last
//! item returned; the next page starts strictly after it, so items created
//! between two calls never shift a page.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Serialize;
use socle_store::listing::After;
use socle_types::ApiError;

pub const DEFAULT_PAGE: i64 = 100;
pub const MAX_PAGE: i64 = 1000;

/// One page of `items` (already sorted by `key`) and the token for the next.
pub fn paginate<T>(
    items: Vec<T>,
    token: Option<&str>,
    per_page: Option<i64>,
    key: impl Fn(&T) -> String,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let per_page = checked_page_size(per_page)?;
    let after = decode_token(token)?;
    let page: Vec<T> = items
        .into_iter()
        .filter(|i| after.as_ref().is_none_or(|a| key(i) > *a))
        .take(per_page as usize + 1)
        .collect();
    Ok(finish_page(page, per_page, key))
}

/// A page asked for: where it starts and how many items it holds at most,
/// for the Read* operations that page in SQL ([`socle_store::listing`]).
pub fn page_request(token: Option<&str>, per_page: Option<i64>) -> Result<(Option<After>, i64), ApiError> {
    let per_page = checked_page_size(per_page)?;
    let after = match decode_token(token)? {
        None => None,
        Some(key) => {
            let (created_at, id) =
                key.split_once('|').ok_or_else(|| ApiError::invalid_value("NextPageToken is not a token this API returned"))?;
            Some(After { created_at: created_at.into(), id: id.into() })
        }
    };
    Ok((after, per_page))
}

/// Trims `rows` (fetched with one more than `per_page`) to the page and
/// gives the token of the next one, if any.
pub fn finish_page<T>(mut rows: Vec<T>, per_page: i64, key: impl Fn(&T) -> String) -> (Vec<T>, Option<String>) {
    if rows.len() > per_page as usize {
        rows.truncate(per_page as usize);
        let next = rows.last().map(|last| URL_SAFE_NO_PAD.encode(key(last)));
        (rows, next)
    } else {
        (rows, None)
    }
}

fn checked_page_size(per_page: Option<i64>) -> Result<i64, ApiError> {
    let per_page = per_page.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&per_page) {
        return Err(ApiError::invalid_value(format!(
            "ResultsPerPage must be between 1 and {MAX_PAGE}, got {per_page}"
        )));
    }
    Ok(per_page)
}

fn decode_token(token: Option<&str>) -> Result<Option<String>, ApiError> {
    match token {
        None | Some("") => Ok(None),
        Some(t) => URL_SAFE_NO_PAD
            .decode(t)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .map(Some)
            .ok_or_else(|| ApiError::invalid_value("NextPageToken is not a token this API returned")),
    }
}

/// The sort key for resources ordered by creation date then ID.
pub fn created_key(created_at: &str, id: &str) -> String {
    format!("{created_at}|{id}")
}

/// Refuses filters Socle does not evaluate yet: silently ignoring a filter
/// would return resources the caller asked to exclude.
pub fn reject_unsupported_filters<F: Serialize>(filters: &Option<F>, supported: &[&str]) -> Result<(), ApiError> {
    let Some(f) = filters else { return Ok(()) };
    let value = serde_json::to_value(f).map_err(|e| ApiError::internal(e.to_string()))?;
    if let Some(obj) = value.as_object() {
        if let Some(name) = obj.keys().find(|k| !supported.contains(&k.as_str())) {
            return Err(ApiError::invalid_value(format!(
                "the filter {name} is not supported by this Socle version; supported: {}",
                supported.join(", ")
            )));
        }
    }
    Ok(())
}

/// Refuses request fields Socle does not implement yet, naming them.
pub fn reject_unsupported_fields<R: Serialize>(req: &R, unsupported: &[&str]) -> Result<(), ApiError> {
    let value = serde_json::to_value(req).map_err(|e| ApiError::internal(e.to_string()))?;
    if let Some(obj) = value.as_object() {
        if let Some(name) = unsupported.iter().find(|n| obj.contains_key(**n)) {
            return Err(ApiError::invalid_value(format!(
                "the parameter {name} is not supported by this Socle version"
            )));
        }
    }
    Ok(())
}

/// True when `list` is absent or contains `value` (an absent filter matches all).
pub fn matches<T: PartialEq<V>, V: ?Sized>(list: &Option<Vec<T>>, value: &V) -> bool {
    list.as_ref().is_none_or(|l| l.iter().any(|x| x == value))
}

/// True when `list` is absent, or `value` is present and in it (a filter on
/// an optional field excludes the resources that lack the field).
pub fn matches_opt(list: &Option<Vec<String>>, value: Option<&str>) -> bool {
    list.as_ref().is_none_or(|l| value.is_some_and(|v| l.iter().any(|x| x == v)))
}

/// True when `list` is absent or one of `values` is in it (filters on the
/// parts of a resource: one matching part is enough).
pub fn matches_any<'a>(list: &Option<Vec<String>>, mut values: impl Iterator<Item = &'a str>) -> bool {
    list.as_ref().is_none_or(|l| values.any(|v| l.iter().any(|x| x == v)))
}

/// The OSC tag filters (TagKeys, TagValues, Tags as "KEY=VALUE"): each given
/// filter must match at least one tag of the resource.
pub fn tags_match(
    tags: &[(String, String)],
    keys: &Option<Vec<String>>,
    values: &Option<Vec<String>>,
    pairs: &Option<Vec<String>>,
) -> bool {
    let key_ok = keys.as_ref().is_none_or(|ks| tags.iter().any(|(k, _)| ks.contains(k)));
    let value_ok = values.as_ref().is_none_or(|vs| tags.iter().any(|(_, v)| vs.contains(v)));
    let pair_ok = pairs.as_ref().is_none_or(|ps| {
        ps.iter().any(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p.as_str(), ""));
            tags.iter().any(|(tk, tv)| tk == k && tv == v)
        })
    });
    key_ok && value_ok && pair_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_walk_all_items_once() {
        let items: Vec<String> = (0..25).map(|i| format!("{i:03}")).collect();
        let mut seen = vec![];
        let mut token = None;
        loop {
            let (page, next) = paginate(items.clone(), token.as_deref(), Some(10), |s| s.clone()).unwrap();
            seen.extend(page);
            match next {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        assert_eq!(seen, items);
    }

    #[test]
    fn bad_page_sizes_and_tokens_are_refused() {
        assert!(paginate(vec![1], None, Some(0), |i| i.to_string()).is_err());
        assert!(paginate(vec![1], None, Some(1001), |i| i.to_string()).is_err());
        assert!(paginate(vec![1], Some("%%%"), None, |i| i.to_string()).is_err());
    }

    #[test]
    fn tag_filters() {
        let tags = vec![("env".to_string(), "prod".to_string()), ("team".to_string(), "a".to_string())];
        let s = |v: &[&str]| Some(v.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        assert!(tags_match(&tags, &s(&["env"]), &None, &None));
        assert!(!tags_match(&tags, &s(&["nope"]), &None, &None));
        assert!(tags_match(&tags, &None, &s(&["a", "x"]), &s(&["env=prod"])));
        assert!(!tags_match(&tags, &None, &None, &s(&["env=dev"])));
    }
}
