//! Export of logged searches as JSONL (docs/contract.md section 1: `leafcache export`,
//! and `GET /v1/export`), the training data of the ranking model.
//!
//! The searches are read a page at a time by [`Pages`] (the reader the
//! quality report shares); each page becomes one chunk of JSON lines.
//! Memory stays flat however many records a range holds.

use super::pages::{PAGE as READ_PAGE, Pages};
use crate::events::record::Record;
use crate::redis::RedisFailure;
use crate::redis::RedisPool;
use crate::redis::keys::Prefix;

/// Records per round trip.
pub const PAGE: usize = READ_PAGE;

/// Which searches to export: the inclusive UTC days `from..=to` (day
/// numbers), and, when `intents` is not empty, only searches with one of them.
#[derive(Clone, Debug)]
pub struct ExportRange {
    pub from: u64,
    pub to: u64,
    pub intents: Vec<String>,
}

/// One page of the export.
pub struct Page {
    /// The day the records belong to.
    pub day: u64,
    /// One JSON object per line.
    pub jsonl: Vec<u8>,
    /// Records written to `jsonl`.
    pub records: usize,
    /// Ids read from the index (written, filtered out or expired).
    pub scanned: usize,
}

pub struct Exporter {
    pages: Pages,
    intents: Vec<String>,
}

impl Exporter {
    pub fn new(redis: RedisPool, prefix: Prefix, range: ExportRange) -> Exporter {
        Exporter {
            pages: Pages::new(redis, prefix, range.from, range.to),
            intents: range.intents,
        }
    }

    /// How many searches the range's daily indexes hold (before the intent
    /// filter), for a progress bar.
    pub async fn total(&self) -> Result<u64, RedisFailure> {
        self.pages.total().await
    }

    /// The next page, `None` once the range is done.
    pub async fn next_page(&mut self) -> Result<Option<Page>, RedisFailure> {
        let Some(read) = self.pages.next_page().await? else {
            return Ok(None);
        };
        let mut page = Page {
            day: read.day,
            jsonl: Vec::with_capacity(read.searches.len() * 512),
            records: 0,
            scanned: read.scanned,
        };
        for logged in read.searches {
            if self.wanted(&logged.record) {
                logged.record.write_line(&logged.feedback, &mut page.jsonl);
                page.records += 1;
            }
        }
        Ok(Some(page))
    }

    fn wanted(&self, record: &Record) -> bool {
        self.intents.is_empty()
            || record
                .get("intent")
                .as_str()
                .is_some_and(|i| self.intents.iter().any(|w| w == i))
    }
}
