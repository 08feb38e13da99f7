//! Reading the fields of a JSON request body, so that a missing or mistyped
//! field answers 400 naming it (docs/contract.md section 5).

use serde_json::{Map, Value};

/// A field that is missing or has the wrong type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadField {
    /// As the client wrote it: `query`, `results[2].product_id`.
    pub field: String,
    pub problem: String,
}

impl BadField {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> BadField {
        BadField {
            field: field.into(),
            problem: problem.into(),
        }
    }

    fn missing(field: &str) -> BadField {
        BadField::new(field, "is required")
    }

    fn mistyped(field: &str, expected: &str) -> BadField {
        BadField::new(field, format!("must be {expected}"))
    }
}

impl std::fmt::Display for BadField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.field, self.problem)
    }
}

/// The body as a JSON object.
pub fn object(body: &[u8]) -> Result<Map<String, Value>, BadField> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(BadField::new("body", "must be a JSON object")),
        Err(e) => Err(BadField::new("body", format!("is not valid JSON ({e})"))),
    }
}

/// A present, non-null value; `null` counts as absent.
fn present<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).filter(|v| !v.is_null())
}

pub fn opt_str(obj: &Map<String, Value>, name: &str) -> Result<Option<String>, BadField> {
    match present(obj, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(BadField::mistyped(name, "a string")),
    }
}

pub fn req_str(obj: &Map<String, Value>, name: &str) -> Result<String, BadField> {
    opt_str(obj, name)?.ok_or_else(|| BadField::missing(name))
}

/// Whether text names nothing: empty or only whitespace. The proxy reads
/// such an identity as absent, and an id like that would name a key such
/// as `user::searches` or `supplier::queries:<date>`.
pub fn is_blank(text: &str) -> bool {
    text.trim().is_empty()
}

/// The one rule for ids (products, suppliers, users where one is required):
/// present text that is not blank. Ids are used literally, as key parts or
/// members, never as patterns, so `:` and `*` are fine.
fn non_blank(name: &str, text: String) -> Result<String, BadField> {
    if is_blank(&text) {
        Err(BadField::new(name, "must not be empty"))
    } else {
        Ok(text)
    }
}

/// An id that applications send as a string or an integer (product and
/// supplier ids of manual results), kept as text as the proxy reads them
/// from answers; never empty.
pub fn opt_id(obj: &Map<String, Value>, name: &str) -> Result<Option<String>, BadField> {
    match present(obj, name) {
        None => Ok(None),
        Some(Value::String(s)) => non_blank(name, s.clone()).map(Some),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(Some(n.to_string())),
        Some(_) => Err(BadField::mistyped(name, "a string or an integer")),
    }
}

pub fn req_id(obj: &Map<String, Value>, name: &str) -> Result<String, BadField> {
    opt_id(obj, name)?.ok_or_else(|| BadField::missing(name))
}

/// An id that must be a non-empty string (the product id of feedback,
/// docs/contract.md section 7).
pub fn req_text_id(obj: &Map<String, Value>, name: &str) -> Result<String, BadField> {
    non_blank(name, req_str(obj, name)?)
}

/// A list of ids (strings or integers, as [`opt_id`]); absent is `None`,
/// present must hold at least one.
pub fn opt_id_list(obj: &Map<String, Value>, name: &str) -> Result<Option<Vec<String>>, BadField> {
    let Some(value) = present(obj, name) else {
        return Ok(None);
    };
    let Value::Array(items) = value else {
        return Err(BadField::mistyped(name, "a list of ids"));
    };
    if items.is_empty() {
        return Err(BadField::new(name, "must name at least one id"));
    }
    items
        .iter()
        .map(|item| match item {
            Value::String(s) => non_blank(name, s.clone()),
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
            _ => Err(BadField::mistyped(name, "a list of ids")),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// A user id where one is required (history, purge): not blank.
pub fn user_id(name: &str, text: String) -> Result<String, BadField> {
    non_blank(name, text)
}

pub fn opt_f64(obj: &Map<String, Value>, name: &str) -> Result<Option<f64>, BadField> {
    match present(obj, name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .map(Some)
            .ok_or_else(|| BadField::mistyped(name, "a number")),
        Some(_) => Err(BadField::mistyped(name, "a number")),
    }
}

pub fn opt_i64(obj: &Map<String, Value>, name: &str) -> Result<Option<i64>, BadField> {
    match present(obj, name) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| BadField::mistyped(name, "an integer")),
    }
}

pub fn opt_count(obj: &Map<String, Value>, name: &str) -> Result<Option<u32>, BadField> {
    match present(obj, name) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| BadField::mistyped(name, "a non-negative integer")),
    }
}

/// A number that cannot be negative (a duration).
pub fn opt_non_negative_f64(obj: &Map<String, Value>, name: &str) -> Result<Option<f64>, BadField> {
    match opt_f64(obj, name)? {
        Some(n) if n < 0.0 => Err(BadField::mistyped(name, "a non-negative number")),
        n => Ok(n),
    }
}

pub fn opt_bool(obj: &Map<String, Value>, name: &str) -> Result<Option<bool>, BadField> {
    match present(obj, name) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(BadField::mistyped(name, "true or false")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn missing_and_mistyped_fields_are_named() {
        let o = obj(json!({"query": 3, "n": "x", "id": 7, "none": null}));
        assert_eq!(req_str(&o, "query").unwrap_err().field, "query");
        assert_eq!(req_str(&o, "absent").unwrap_err().problem, "is required");
        assert_eq!(req_str(&o, "none").unwrap_err().problem, "is required");
        assert_eq!(opt_i64(&o, "n").unwrap_err().field, "n");
        assert_eq!(req_id(&o, "id").unwrap(), "7");
        assert_eq!(opt_count(&o, "absent").unwrap(), None);
        assert!(object(b"[1]").is_err());
        assert!(object(b"{").is_err());
    }

    #[test]
    fn an_id_is_never_blank_and_a_text_id_never_a_number() {
        let o = obj(json!({"empty": "", "blank": " ", "n": 7, "key": "a:cache:*"}));
        for name in ["empty", "blank"] {
            assert_eq!(req_id(&o, name).unwrap_err().problem, "must not be empty");
            assert_eq!(req_text_id(&o, name).unwrap_err().field, name);
        }
        assert_eq!(req_id(&o, "n").unwrap(), "7");
        assert_eq!(
            req_text_id(&o, "n").unwrap_err().problem,
            "must be a string"
        );
        assert_eq!(
            req_text_id(&o, "key").unwrap(),
            "a:cache:*",
            "taken literally"
        );
        assert!(user_id("user_id", "\t".into()).is_err());
        let o = obj(json!({"ms": -1.5, "ok": 0}));
        assert_eq!(opt_non_negative_f64(&o, "ms").unwrap_err().field, "ms");
        assert_eq!(opt_non_negative_f64(&o, "ok").unwrap(), Some(0.0));
    }
}
