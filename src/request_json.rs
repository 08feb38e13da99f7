//! Reading a request body as JSON for the key and the identity, so that it
//! reads one way only.
//!
//! serde_json keeps the last of two members with the same name, while other
//! parsers keep the first or refuse the document: `{"user_id": "a",
//! "user_id": "b"}` is two users, depending on who reads it. Such a body is
//! [`Body::Ambiguous`], and the request bypasses. Numbers keep their exact
//! text (serde_json's `arbitrary_precision`), so `1e400`, `2^64` and
//! `2^64 + 1` never collapse into one float in the key.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// What a request body is, to the key.
#[derive(Debug, PartialEq)]
pub enum Body {
    Json(Value),
    /// Not JSON (or not one JSON document).
    NotJson,
    /// JSON that parsers read differently: a member name twice in an object.
    Ambiguous,
}

/// The member name serde_json uses to carry an exact number through
/// `deserialize_any` (`arbitrary_precision`); a client can send it too.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// Parses `bytes` as one JSON document, refusing duplicate member names.
pub fn parse(bytes: &[u8]) -> Body {
    let flags = Flags::default();
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = Strict(&flags)
        .deserialize(&mut de)
        .and_then(|value| de.end().map(|()| value));
    if flags.ambiguous.get() {
        return Body::Ambiguous;
    }
    match parsed {
        // A number arrives as a one-member object named NUMBER_TOKEN; a
        // client's own member of that name, unescaped, would look the same.
        Ok(_) if flags.number.get() && contains(bytes, NUMBER_TOKEN.as_bytes()) => Body::Ambiguous,
        Ok(value) => Body::Json(value),
        Err(_) => Body::NotJson,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[derive(Default)]
struct Flags {
    /// Set on a duplicate member (the parse then stops with an error).
    ambiguous: Cell<bool>,
    /// Set when an exact number came through NUMBER_TOKEN.
    number: Cell<bool>,
}

#[derive(Clone, Copy)]
struct Strict<'f>(&'f Flags);

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

/// A member name, and whether it came straight from the input: serde_json
/// hands NUMBER_TOKEN over borrowed, while a name written with escapes
/// arrives copied.
struct Name {
    text: String,
    borrowed: bool,
}

struct NameSeed;

impl<'de> DeserializeSeed<'de> for NameSeed {
    type Value = Name;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Name, D::Error> {
        d.deserialize_str(NameSeed)
    }
}

impl<'de> Visitor<'de> for NameSeed {
    type Value = Name;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Name, E> {
        Ok(Name {
            text: v.to_owned(),
            borrowed: true,
        })
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Name, E> {
        Ok(Name {
            text: v.to_owned(),
            borrowed: false,
        })
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("not a JSON number"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        let mut first = true;
        while let Some(name) = map.next_key_seed(NameSeed)? {
            if name.text == NUMBER_TOKEN {
                if !(first && name.borrowed) {
                    self.0.ambiguous.set(true);
                    return Err(de::Error::custom("a member named like serde_json's number"));
                }
                let text: String = map.next_value()?;
                let number: Number = text.parse().map_err(de::Error::custom)?;
                self.0.number.set(true);
                return Ok(Value::Number(number));
            }
            first = false;
            let value = map.next_value_seed(self)?;
            if object.insert(name.text, value).is_some() {
                self.0.ambiguous.set(true);
                return Err(de::Error::custom("a member name twice"));
            }
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn json(text: &str) -> Value {
        match parse(text.as_bytes()) {
            Body::Json(v) => v,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn reads_what_serde_json_reads() {
        for text in [
            r#"{"query": "milk", "limit": 10, "filters": {"a": [1, -2, true, null]}}"#,
            r#"[1, "two", {"three": 3}]"#,
            r#""text""#,
            "42",
            "{}",
        ] {
            assert_eq!(
                json(text),
                serde_json::from_str::<Value>(text).unwrap(),
                "{text}"
            );
        }
    }

    #[test]
    fn a_member_name_twice_is_ambiguous_at_any_depth() {
        for text in [
            r#"{"user_id": "a", "user_id": "b"}"#,
            r#"{"user_id": "a", "user_\u0069d": "a"}"#,
            r#"{"x": [{"k": 1, "k": 1}]}"#,
        ] {
            assert_eq!(parse(text.as_bytes()), Body::Ambiguous, "{text}");
        }
    }

    #[test]
    fn numbers_keep_their_exact_text() {
        let big = json(r#"{"n": 18446744073709551616}"#);
        let next = json(r#"{"n": 18446744073709551617}"#);
        assert_ne!(big, next);
        assert_eq!(big["n"].to_string(), "18446744073709551616");
        assert_ne!(
            json(r#"{"p": 0.1}"#),
            json(r#"{"p": 0.10000000000000000001}"#)
        );
        assert_eq!(json(r#"{"p": 1.5}"#)["p"].as_f64(), Some(1.5));
        assert_eq!(json("-7"), json!(-7));
    }

    #[test]
    fn a_client_member_named_like_the_number_carrier_is_ambiguous() {
        for text in [
            r#"{"$serde_json::private::Number": "5"}"#,
            r#"{"\u0024serde_json::private::Number": "5"}"#,
            r#"{"a": 1.5, "b": {"$serde_json::private::Number": "1.5"}}"#,
            r#"{"a": 1, "$serde_json::private::Number": "5"}"#,
        ] {
            assert_eq!(parse(text.as_bytes()), Body::Ambiguous, "{text}");
        }
    }

    #[test]
    fn not_json_is_not_json() {
        for text in ["", "{", "{} {}", "milk", "\u{feff}{}", r#"{"a": "\ud800"}"#] {
            assert_eq!(parse(text.as_bytes()), Body::NotJson, "{text:?}");
        }
    }
}
