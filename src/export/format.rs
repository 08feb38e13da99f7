//! The bytes of one exported object, made from the export's JSONL lines (the
//! stable format of [`crate::admin::export`]) a page at a time: the lines
//! themselves (optionally gzipped), chat training pairs, or Parquet. Each
//! [`Encoder::push`] hands back what is ready to upload, so nothing but the
//! current page (and for Parquet, the current row group) is held.

use std::io::Write;

use anyhow::Context;
use flate2::Compression;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::parquet::ParquetEncoder;

/// `--format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per search, with its feedback (the default).
    Jsonl,
    /// Typed columns, one row group per 64k searches (zstd inside).
    Parquet,
    /// Chat pairs for fine-tuning an intent model (TRL's SFT format): one
    /// line per search that has an intent.
    Chat,
}

impl Format {
    /// The object's name in a `--daily` partition.
    pub fn daily_name(self, gzip: bool) -> &'static str {
        match (self, gzip) {
            (Format::Jsonl, false) => "searches.jsonl",
            (Format::Jsonl, true) => "searches.jsonl.gz",
            (Format::Chat, false) => "chat.jsonl",
            (Format::Chat, true) => "chat.jsonl.gz",
            (Format::Parquet, _) => "searches.parquet",
        }
    }
}

/// Turns pages of export lines into the bytes of one object.
pub struct Encoder {
    kind: Kind,
    /// Rows written: searches, or chat pairs.
    rows: u64,
}

enum Kind {
    Lines {
        chat: bool,
        gzip: Option<Box<GzEncoder<Vec<u8>>>>,
    },
    Parquet(Box<ParquetEncoder>),
}

impl Encoder {
    pub fn new(format: Format, gzip: bool) -> anyhow::Result<Encoder> {
        let kind = match format {
            Format::Parquet => Kind::Parquet(Box::new(ParquetEncoder::new()?)),
            Format::Jsonl | Format::Chat => Kind::Lines {
                chat: format == Format::Chat,
                gzip: gzip.then(|| Box::new(GzEncoder::new(Vec::new(), Compression::default()))),
            },
        };
        Ok(Encoder { kind, rows: 0 })
    }

    /// Rows written so far: searches, or for `chat`, training pairs.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Encodes one page of export lines; the bytes ready to be written
    /// (possibly none).
    pub fn push(&mut self, jsonl: Vec<u8>) -> anyhow::Result<Vec<u8>> {
        match &mut self.kind {
            Kind::Lines { chat, gzip } => {
                let lines = if *chat {
                    let (pairs, n) = chat_pairs(&jsonl)?;
                    self.rows += n;
                    pairs
                } else {
                    self.rows += count_lines(&jsonl);
                    jsonl
                };
                match gzip {
                    None => Ok(lines),
                    Some(gz) => {
                        gz.write_all(&lines).context("cannot compress the export")?;
                        // What the encoder has produced so far; it keeps its
                        // own state (window, CRC), not these bytes.
                        Ok(std::mem::take(gz.get_mut()))
                    }
                }
            }
            Kind::Parquet(p) => {
                self.rows += count_lines(&jsonl);
                p.push(&jsonl)
            }
        }
    }

    /// The object's last bytes (gzip trailer, Parquet footer).
    pub fn finish(self) -> anyhow::Result<Vec<u8>> {
        match self.kind {
            Kind::Lines { gzip: None, .. } => Ok(Vec::new()),
            Kind::Lines { gzip: Some(gz), .. } => gz.finish().context("cannot compress the export"),
            Kind::Parquet(p) => p.finish(),
        }
    }
}

fn count_lines(jsonl: &[u8]) -> u64 {
    jsonl.iter().filter(|b| **b == b'\n').count() as u64
}

/// What a chat pair needs of an export line.
#[derive(Deserialize)]
struct Labeled {
    query: Option<String>,
    intent: Option<String>,
    confidence: Option<Value>,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct Chat<'a> {
    messages: [Message<'a>; 2],
}

#[derive(Serialize)]
struct Label<'a> {
    intent: &'a str,
    confidence: &'a Option<Value>,
}

/// One chat line per search with an intent (and a query): the user's query,
/// and the assistant's answer, the intent and confidence as compact JSON, so
/// that a model fine-tuned on them answers in a form a program can parse.
fn chat_pairs(jsonl: &[u8]) -> anyhow::Result<(Vec<u8>, u64)> {
    let mut out = Vec::with_capacity(jsonl.len() / 4);
    let mut n = 0;
    for line in jsonl.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let record: Labeled =
            serde_json::from_slice(line).context("an export line is not a JSON object")?;
        let (Some(query), Some(intent)) = (&record.query, &record.intent) else {
            continue;
        };
        if intent.is_empty() || query.is_empty() {
            continue;
        }
        let answer = serde_json::to_string(&Label {
            intent,
            confidence: &record.confidence,
        })?;
        let chat = Chat {
            messages: [
                Message {
                    role: "user",
                    content: query,
                },
                Message {
                    role: "assistant",
                    content: &answer,
                },
            ],
        };
        serde_json::to_writer(&mut out, &chat)?;
        out.push(b'\n');
        n += 1;
    }
    Ok((out, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_pairs_skip_searches_without_an_intent() {
        let page = concat!(
            r#"{"search_id":"a","query":"milk","intent":"product_search","confidence":0.9,"feedback":[]}"#,
            "\n",
            r#"{"search_id":"b","query":"bread","intent":null,"confidence":null,"feedback":[]}"#,
            "\n",
            r#"{"search_id":"c","query":"add eggs","intent":"add_to_order","confidence":null}"#,
            "\n",
        );
        let (out, n) = chat_pairs(page.as_bytes()).unwrap();
        assert_eq!(n, 2);
        let lines: Vec<Value> = out
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(
            lines[0],
            serde_json::json!({"messages": [
                {"role": "user", "content": "milk"},
                {"role": "assistant", "content": "{\"intent\":\"product_search\",\"confidence\":0.9}"},
            ]})
        );
        assert_eq!(
            lines[1]["messages"][1]["content"],
            "{\"intent\":\"add_to_order\",\"confidence\":null}"
        );
    }

    #[test]
    fn gzip_output_is_one_stream_over_many_pages() {
        let mut enc = Encoder::new(Format::Jsonl, true).unwrap();
        let mut out = enc.push(b"{\"a\":1}\n".to_vec()).unwrap();
        out.extend(enc.push(b"{\"a\":2}\n".to_vec()).unwrap());
        assert_eq!(enc.rows(), 2);
        out.extend(enc.finish().unwrap());
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&out[..]), &mut text)
            .unwrap();
        assert_eq!(text, "{\"a\":1}\n{\"a\":2}\n");
    }
}
