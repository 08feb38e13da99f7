//! Feedback on a logged search (docs/contract.md section 5): a click, an add to order
//! or a purchase of one of its results, the labels a ranking model needs.

use std::time::Duration;

use bb8_redis::redis;
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::fields::{self, BadField};
use super::record::{self, SearchId};
use crate::events::record::FeedbackEntry;
use crate::events::write::Layout;
use crate::redis::RedisFailure;
use crate::redis::RedisPool;
use crate::redis::keys;
use crate::redis::pool::Command;

const DEADLINE: Duration = Duration::from_secs(5);

/// What the user did with a result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Click,
    AddToOrder,
    Purchase,
}

impl Action {
    pub fn parse(text: &str) -> Option<Action> {
        match text {
            "click" => Some(Action::Click),
            "add_to_order" => Some(Action::AddToOrder),
            "purchase" => Some(Action::Purchase),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Click => "click",
            Action::AddToOrder => "add_to_order",
            Action::Purchase => "purchase",
        }
    }

    /// The word in `products:<word>:<date>`.
    fn products_word(self) -> &'static str {
        match self {
            Action::Click => "clicked",
            Action::AddToOrder => "ordered",
            Action::Purchase => "purchased",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Feedback {
    /// As sent: text that is not a search id is an unknown search (404),
    /// not a bad field, so it is judged by [`SearchId::parse`] when recorded.
    pub search_id: String,
    pub action: Action,
    pub product_id: String,
    /// The result's position as the application counts it (from 1, as
    /// the search's impressions do); never negative. When absent, the
    /// product's impression gives it ([`record`]).
    pub position: Option<u32>,
}

impl Feedback {
    pub fn from_json(obj: &Map<String, Value>) -> Result<Feedback, BadField> {
        let search_id = fields::req_str(obj, "search_id")?;
        let event = fields::req_str(obj, "event")?;
        let action = Action::parse(&event).ok_or_else(|| {
            BadField::new(
                "event",
                "must be \"click\", \"add_to_order\" or \"purchase\"",
            )
        })?;
        Ok(Feedback {
            search_id,
            action,
            product_id: fields::req_text_id(obj, "product_id")?,
            position: fields::opt_count(obj, "position")?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FeedbackError {
    #[error("no search {0} (unknown or expired)")]
    UnknownSearch(String),
    #[error(transparent)]
    Redis(#[from] RedisFailure),
}

/// What was recorded of a feedback event: its position, checked against
/// the search's impressions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// The position stored: as sent, or the impression's when none was.
    pub position: Option<u64>,
    /// The product's 1-based place in the search's results (`product_ids`),
    /// `None` when the search did not show it. When the application sent a
    /// position that differs, its own is kept (it knows what it drew: a
    /// banner without a product id, or a repeated product, is a place on
    /// its page but not in `product_ids`), and the answer shows both.
    pub impression_position: Option<u64>,
}

/// Records one feedback event at `now_ms`, in one MULTI/EXEC. A missing
/// position is taken from the search's impressions when the product is
/// among them.
pub async fn record(
    redis: &RedisPool,
    layout: &Layout,
    fb: &Feedback,
    now_ms: u64,
) -> Result<Recorded, FeedbackError> {
    let p = &layout.prefix;
    let ttl = layout.retention_secs;
    let record_ttl = layout.record_retention_secs;
    let unknown = || FeedbackError::UnknownSearch(fb.search_id.clone());
    let id = SearchId::parse(&fb.search_id).ok_or_else(unknown)?;
    let Some(logged) = record::read_one(redis, p, id).await? else {
        return Err(unknown());
    };
    let search = id.record_key(p);
    let deadline = Instant::now() + DEADLINE;
    let supplier = logged
        .record
        .get("product_suppliers")
        .get(&fb.product_id)
        .and_then(Value::as_str)
        .map(str::to_owned);

    let impression_position = logged.record.impression_position(&fb.product_id);
    let position = fb.position.map(u64::from).or(impression_position);

    let timestamp = crate::time::rfc3339_ms(now_ms);
    let date = timestamp[..10].to_owned();
    let entry = FeedbackEntry {
        event: fb.action.as_str().to_owned(),
        product_id: fb.product_id.clone(),
        position,
        timestamp,
    }
    .to_json();

    // The record's counts are counted from the list when it is read. The
    // list lives as long as the record it belongs to: feedback refreshes
    // both.
    let mut tx = redis::pipe();
    tx.atomic();
    tx.cmd("EXPIRE").arg(&search).arg(record_ttl).ignore();
    let list = id.feedback_key(p);
    tx.cmd("RPUSH").arg(&list).arg(entry).ignore();
    tx.cmd("EXPIRE").arg(&list).arg(record_ttl).ignore();
    let products = keys::products_feedback(p, fb.action.products_word(), &date);
    tx.cmd("ZINCRBY")
        .arg(&products)
        .arg(1)
        .arg(&fb.product_id)
        .ignore();
    tx.cmd("EXPIRE").arg(&products).arg(ttl).ignore();
    if let (Action::Click, Some(supplier)) = (fb.action, supplier) {
        let clicks = keys::supplier_clicks(p, &supplier, &date);
        tx.cmd("ZINCRBY")
            .arg(&clicks)
            .arg(1)
            .arg(&fb.product_id)
            .ignore();
        tx.cmd("EXPIRE").arg(&clicks).arg(ttl).ignore();
    }
    redis.query::<()>(Command::Pipe(&tx), deadline).await?;
    Ok(Recorded {
        position,
        impression_position,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_bad_field_is_named() {
        let parse = |v: Value| Feedback::from_json(v.as_object().unwrap());
        let ok = json!({"search_id": "s", "event": "click", "product_id": "p", "position": 2});
        assert_eq!(parse(ok).unwrap().position, Some(2));
        for (body, field) in [
            (json!({"event": "click", "product_id": "p"}), "search_id"),
            (json!({"search_id": "s", "product_id": "p"}), "event"),
            (
                json!({"search_id": "s", "event": "like", "product_id": "p"}),
                "event",
            ),
            (json!({"search_id": "s", "event": "click"}), "product_id"),
            (
                json!({"search_id": "s", "event": "click", "product_id": "p", "position": "1"}),
                "position",
            ),
            (
                json!({"search_id": "s", "event": "click", "product_id": "p", "position": -5}),
                "position",
            ),
            (
                json!({"search_id": "s", "event": "click", "product_id": ""}),
                "product_id",
            ),
            (
                json!({"search_id": "s", "event": "click", "product_id": 7}),
                "product_id",
            ),
        ] {
            assert_eq!(parse(body.clone()).unwrap_err().field, field, "{body}");
        }
    }
}
