//! Reading every logged search of a range of days, a page at a time: the
//! one reader behind the export ([`super::export`]) and the search quality
//! report ([`super::stats`]).
//!
//! Each day's `searches:daily:<date>` index is read [`PAGE`] ids at a time,
//! and one pipelined round trip fetches the records of a page, their
//! feedback lists, and the ids of the next page. Memory stays flat however
//! many records a range holds: one page of records at a time.

use std::time::Duration;

use bb8_redis::redis::{self, FromRedisValue};
use tokio::time::Instant;

use super::dates;
use super::record::{self, Logged};
use crate::redis::RedisFailure;
use crate::redis::RedisPool;
use crate::redis::keys::{self, Prefix};
use crate::redis::pool::Command;

/// Records per round trip.
pub const PAGE: usize = 500;
const DEADLINE: Duration = Duration::from_secs(30);

/// One page of logged searches, in the order of their day's index (by
/// timestamp).
pub struct RecordPage {
    /// The day the searches belong to (a day number).
    pub day: u64,
    /// The searches whose records could be read; an id whose record expired
    /// before its index entry, or that is not a record leafcache wrote, is
    /// left out.
    pub searches: Vec<Logged>,
    /// Ids read from the index (read, or left out).
    pub scanned: usize,
}

/// Pages through the logged searches of the inclusive days `from..=to`.
pub struct Pages {
    redis: RedisPool,
    prefix: Prefix,
    from: u64,
    to: u64,
    day: u64,
    offset: usize,
    /// The ids of the next page of `day`, fetched with the previous page.
    next_ids: Option<Vec<String>>,
}

impl Pages {
    /// `from` and `to` are day numbers ([`dates`]).
    pub fn new(redis: RedisPool, prefix: Prefix, from: u64, to: u64) -> Pages {
        Pages {
            redis,
            prefix,
            from,
            to,
            day: from,
            offset: 0,
            next_ids: None,
        }
    }

    /// How many searches the daily indexes of `from..=to` hold, for a
    /// progress bar.
    pub async fn total(&self) -> Result<u64, RedisFailure> {
        let mut pipe = redis::pipe();
        for day in self.from..=self.to {
            pipe.cmd("ZCARD")
                .arg(keys::searches_daily(&self.prefix, &dates::format(day)));
        }
        let counts: Vec<u64> = self
            .redis
            .query(Command::Pipe(&pipe), Instant::now() + DEADLINE)
            .await?;
        Ok(counts.iter().sum())
    }

    fn page_of_ids(&self, pipe: &mut redis::Pipeline, offset: usize) {
        let key = keys::searches_daily(&self.prefix, &dates::format(self.day));
        pipe.cmd("ZRANGE")
            .arg(key)
            .arg(offset)
            .arg(offset + PAGE - 1);
    }

    /// The next page, `None` once the range is done.
    pub async fn next_page(&mut self) -> Result<Option<RecordPage>, RedisFailure> {
        loop {
            if self.day > self.to {
                return Ok(None);
            }
            let ids = match self.next_ids.take() {
                Some(ids) => ids,
                None => {
                    let mut pipe = redis::pipe();
                    self.page_of_ids(&mut pipe, self.offset);
                    let (ids,): (Vec<String>,) = self
                        .redis
                        .query(Command::Pipe(&pipe), Instant::now() + DEADLINE)
                        .await?;
                    ids
                }
            };
            if ids.is_empty() {
                self.day += 1;
                self.offset = 0;
                continue;
            }
            self.offset += ids.len();
            let more = ids.len() == PAGE;
            let deadline = Instant::now() + DEADLINE;
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            record::queue_reads(&mut pipe, &self.prefix, &ids);
            if more {
                self.page_of_ids(&mut pipe, self.offset);
            }
            let values: Vec<redis::Value> =
                self.redis.query(Command::Pipe(&pipe), deadline).await?;
            let mut values = values.into_iter();
            let found =
                record::take_records(&self.redis, &self.prefix, &ids, &mut values, deadline)
                    .await?;
            let page = RecordPage {
                day: self.day,
                searches: found.into_iter().flatten().collect(),
                scanned: ids.len(),
            };
            self.next_ids = Some(if more {
                match values.next() {
                    Some(redis::Value::ServerError(e)) => {
                        return Err(RedisFailure::Redis(e.into()));
                    }
                    v => take(v)?,
                }
            } else {
                Vec::new()
            });
            return Ok(Some(page));
        }
    }
}

fn take<T: FromRedisValue>(value: Option<redis::Value>) -> Result<T, RedisFailure> {
    let value = value.unwrap_or(redis::Value::Nil);
    redis::from_redis_value(value).map_err(|e| RedisFailure::Redis(e.into()))
}
