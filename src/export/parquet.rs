//! `--format parquet`: the export's lines as typed columns, readable by
//! pyarrow, DuckDB, Spark and BigQuery.
//!
//! | column | type |
//! |---|---|
//! | search_id, user_id, user_uuid, session_id, query, query_normalized, intent, cache, route | string |
//! | timestamp | timestamp (ms, UTC) |
//! | confidence, response_time_ms | double |
//! | results_count, status, clicks, orders, purchases | int64 |
//! | product_ids, supplier_ids | list\<string\> |
//! | product_suppliers | map\<string, string\> (product id → supplier id) |
//! | feedback | list\<struct\<event: string, product_id: string, position: int64, timestamp: timestamp (ms, UTC)\>\> |
//! | impressions | list\<struct\<product_id: string, position: int64\>\> (1-based, in result order) |
//!
//! The JSONL's `ubi` object is left out: it restates these columns in
//! UBI's names, and a table reader joins them as it likes.
//!
//! The schema is fixed: fields the layout does not name (an application's
//! extra fields, which JSONL carries as text) are left out, and a value of
//! the wrong type (which the writer never stores) becomes null rather than
//! failing a day's export.
//!
//! Each line is read as JSON, mapped onto that schema ([`Row`]), and handed
//! to arrow-json's decoder, which builds the Arrow arrays; parquet's
//! `ArrowWriter` encodes them. Its output goes into a buffer that
//! [`ParquetEncoder::push`] empties after every page, so memory is bounded by
//! the row group in progress: at most [`ROW_GROUP_ROWS`] rows or
//! [`ROW_GROUP_BYTES`] bytes, whichever comes first.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use anyhow::Context;
use arrow_json::reader::{Decoder, ReaderBuilder};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use serde::Serialize;
use serde_json::Value;

/// Rows per row group: large enough for good compression and fast scans,
/// small enough to bound the writer's memory.
pub const ROW_GROUP_ROWS: usize = 65_536;
/// A row group is also closed at this (estimated, encoded) size, for rows
/// with unusually long lists.
pub const ROW_GROUP_BYTES: usize = 16 << 20;

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into()))
}

fn list_of(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", item, true)))
}

/// The columns, in the order of the JSONL fields.
pub fn schema() -> SchemaRef {
    let text = |name: &str| Field::new(name, DataType::Utf8, true);
    let int = |name: &str| Field::new(name, DataType::Int64, true);
    let float = |name: &str| Field::new(name, DataType::Float64, true);
    let entries = Field::new(
        "entries",
        DataType::Struct(Fields::from(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("value", DataType::Utf8, true),
        ])),
        false,
    );
    let feedback = DataType::Struct(Fields::from(vec![
        text("event"),
        text("product_id"),
        int("position"),
        Field::new("timestamp", timestamp(), true),
    ]));
    let impression = DataType::Struct(Fields::from(vec![text("product_id"), int("position")]));
    Arc::new(Schema::new(vec![
        text("search_id"),
        Field::new("timestamp", timestamp(), true),
        text("user_id"),
        text("user_uuid"),
        text("session_id"),
        text("query"),
        text("query_normalized"),
        text("intent"),
        float("confidence"),
        int("results_count"),
        Field::new("product_ids", list_of(DataType::Utf8), true),
        Field::new("supplier_ids", list_of(DataType::Utf8), true),
        Field::new(
            "product_suppliers",
            DataType::Map(Arc::new(entries), false),
            true,
        ),
        float("response_time_ms"),
        text("cache"),
        int("status"),
        text("route"),
        text("answer_unreadable"),
        int("clicks"),
        int("orders"),
        int("purchases"),
        Field::new("feedback", list_of(feedback), true),
        Field::new("impressions", list_of(impression), true),
    ]))
}

/// One line mapped onto [`schema`]; arrow-json decodes it by field name.
#[derive(Serialize)]
struct Row<'a> {
    search_id: Option<&'a str>,
    timestamp: Option<i64>,
    user_id: Option<&'a str>,
    user_uuid: Option<&'a str>,
    session_id: Option<&'a str>,
    query: Option<&'a str>,
    query_normalized: Option<&'a str>,
    intent: Option<&'a str>,
    confidence: Option<f64>,
    results_count: Option<i64>,
    product_ids: Option<Vec<Option<&'a str>>>,
    supplier_ids: Option<Vec<Option<&'a str>>>,
    product_suppliers: Option<BTreeMap<&'a str, Option<&'a str>>>,
    response_time_ms: Option<f64>,
    cache: Option<&'a str>,
    status: Option<i64>,
    route: Option<&'a str>,
    answer_unreadable: Option<&'a str>,
    clicks: Option<i64>,
    orders: Option<i64>,
    purchases: Option<i64>,
    feedback: Option<Vec<Feedback<'a>>>,
    impressions: Option<Vec<Impression<'a>>>,
}

#[derive(Serialize)]
struct Impression<'a> {
    product_id: Option<&'a str>,
    position: Option<i64>,
}

#[derive(Serialize)]
struct Feedback<'a> {
    event: Option<&'a str>,
    product_id: Option<&'a str>,
    position: Option<i64>,
    timestamp: Option<i64>,
}

fn integer(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_str()?.parse().ok())
}

fn float(v: &Value) -> Option<f64> {
    v.as_f64()
        .or_else(|| v.as_str()?.parse().ok())
        .filter(|f| f.is_finite())
}

/// An RFC 3339 timestamp in ms since the epoch.
fn millis(v: &Value) -> Option<i64> {
    let t = humantime::parse_rfc3339(v.as_str()?).ok()?;
    i64::try_from(t.duration_since(UNIX_EPOCH).ok()?.as_millis()).ok()
}

fn texts(v: &Value) -> Option<Vec<Option<&str>>> {
    Some(v.as_array()?.iter().map(Value::as_str).collect())
}

impl<'a> Row<'a> {
    fn of(line: &'a Value) -> Row<'a> {
        let field = |name: &str| line.get(name).filter(|v| !v.is_null());
        let text = |name: &str| field(name).and_then(Value::as_str);
        let int = |name: &str| field(name).and_then(integer);
        let float = |name: &str| field(name).and_then(float);
        let feedback = field("feedback").and_then(Value::as_array).map(|events| {
            events
                .iter()
                .filter(|e| e.is_object())
                .map(|e| Feedback {
                    event: e.get("event").and_then(Value::as_str),
                    product_id: e.get("product_id").and_then(Value::as_str),
                    position: e.get("position").and_then(integer),
                    timestamp: e.get("timestamp").and_then(millis),
                })
                .collect()
        });
        let impressions = field("impressions").and_then(Value::as_array).map(|shown| {
            shown
                .iter()
                .filter(|i| i.is_object())
                .map(|i| Impression {
                    product_id: i.get("product_id").and_then(Value::as_str),
                    position: i.get("position").and_then(integer),
                })
                .collect()
        });
        Row {
            search_id: text("search_id"),
            timestamp: field("timestamp").and_then(millis),
            user_id: text("user_id"),
            user_uuid: text("user_uuid"),
            session_id: text("session_id"),
            query: text("query"),
            query_normalized: text("query_normalized"),
            intent: text("intent"),
            confidence: float("confidence"),
            results_count: int("results_count"),
            product_ids: field("product_ids").and_then(texts),
            supplier_ids: field("supplier_ids").and_then(texts),
            product_suppliers: field("product_suppliers")
                .and_then(Value::as_object)
                .map(|m| m.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()),
            response_time_ms: float("response_time_ms"),
            cache: text("cache"),
            status: int("status"),
            route: text("route"),
            answer_unreadable: text("answer_unreadable"),
            clicks: int("clicks"),
            orders: int("orders"),
            purchases: int("purchases"),
            feedback,
            impressions,
        }
    }
}

/// Writes one Parquet file, a page of lines at a time.
pub struct ParquetEncoder {
    decoder: Decoder,
    writer: ArrowWriter<Vec<u8>>,
}

impl ParquetEncoder {
    pub fn new() -> anyhow::Result<ParquetEncoder> {
        let schema = schema();
        let decoder = ReaderBuilder::new(schema.clone())
            .with_batch_size(crate::admin::export::PAGE)
            .build_decoder()
            .context("cannot build the Parquet schema")?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
            // Unique on every row: a dictionary would only cost memory and
            // time (and 6% of the file) before the writer gave up on it.
            .set_column_dictionary_enabled(ColumnPath::from("search_id"), false)
            .build();
        let writer = ArrowWriter::try_new(Vec::new(), schema, Some(props))
            .context("cannot start the Parquet file")?;
        Ok(ParquetEncoder { decoder, writer })
    }

    /// Adds a page of lines; the file's bytes encoded so far (whole row
    /// groups, once one is complete).
    pub fn push(&mut self, jsonl: &[u8]) -> anyhow::Result<Vec<u8>> {
        // One line at a time: a parsed line is garbage as soon as the
        // decoder has taken its values, so a page's worth never lives at once.
        for line in jsonl.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let value: Value =
                serde_json::from_slice(line).context("an export line is not JSON")?;
            self.decoder
                .serialize(&[Row::of(&value)])
                .context("cannot convert the export to Arrow")?;
        }
        self.write_decoded()?;
        // The writer only appends to its buffer; what it holds is the
        // file's next bytes, in order.
        Ok(std::mem::take(self.writer.inner_mut()))
    }

    fn write_decoded(&mut self) -> anyhow::Result<()> {
        while let Some(batch) = self
            .decoder
            .flush()
            .context("cannot convert the export to Arrow")?
        {
            self.writer
                .write(&batch)
                .context("cannot encode the Parquet file")?;
        }
        Ok(())
    }

    /// The last row group and the footer.
    pub fn finish(mut self) -> anyhow::Result<Vec<u8>> {
        self.write_decoded()?;
        self.writer
            .finish()
            .context("cannot finish the Parquet file")?;
        Ok(std::mem::take(self.writer.inner_mut()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Array, Int64Array, ListArray, StructArray, TimestampMillisecondArray};
    use bytes::Bytes;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    const LINE: &str = r#"{"search_id":"s1","timestamp":"2025-11-25T01:00:00.250Z","user_id":"u1","user_uuid":null,"session_id":null,"query":"milk","query_normalized":"milk","intent":"product_search","confidence":0.75,"results_count":2,"product_ids":["p1","p2"],"supplier_ids":["s1","s2"],"product_suppliers":{"p1":"s1","p2":"s2"},"response_time_ms":12.5,"cache":"miss","status":200,"route":"search","answer_unreadable":"coding","clicks":1,"orders":0,"purchases":0,"app":"x","feedback":[{"event":"click","product_id":"p2","position":2,"timestamp":"2025-11-25T01:00:05.000Z"}],"impressions":[{"product_id":"p1","position":1},{"product_id":"p2","position":2}]}"#;

    fn read(file: Vec<u8>) -> Vec<arrow_array::RecordBatch> {
        ParquetRecordBatchReaderBuilder::try_new(Bytes::from(file))
            .unwrap()
            .build()
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn lines_become_typed_columns() {
        let mut enc = ParquetEncoder::new().unwrap();
        let mut file = enc.push(format!("{LINE}\n").as_bytes()).unwrap();
        // A value of the wrong type is null, not a failed export.
        let odd = r#"{"search_id":"s2","timestamp":"yesterday","results_count":"many","product_ids":"p1","feedback":["junk"]}"#;
        file.extend(enc.push(format!("{odd}\n").as_bytes()).unwrap());
        file.extend(enc.finish().unwrap());
        let batches = read(file);
        assert_eq!(batches.len(), 1, "one row group, one batch");
        let batch = &batches[0];
        assert_eq!(batch.num_rows(), 2);
        let ts = batch
            .column_by_name("timestamp")
            .unwrap()
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .unwrap();
        assert_eq!(ts.value(0), 1_764_032_400_250);
        assert!(ts.is_null(1));
        let results = batch.column_by_name("results_count").unwrap();
        let results = results.as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(results.value(0), 2);
        assert!(results.is_null(1));
        let feedback = batch.column_by_name("feedback").unwrap();
        let feedback = feedback.as_any().downcast_ref::<ListArray>().unwrap();
        let first = feedback.value(0);
        let first = first.as_any().downcast_ref::<StructArray>().unwrap();
        let position = first.column_by_name("position").unwrap();
        assert_eq!(
            position
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .value(0),
            2
        );
        assert_eq!(feedback.value(1).len(), 0);
        let impressions = batch.column_by_name("impressions").unwrap();
        let impressions = impressions.as_any().downcast_ref::<ListArray>().unwrap();
        let shown = impressions.value(0);
        let shown = shown.as_any().downcast_ref::<StructArray>().unwrap();
        let positions = shown.column_by_name("position").unwrap();
        let positions = positions.as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(positions.values(), &[1, 2]);
        assert!(impressions.is_null(1), "a line without impressions");
        assert!(batch.column_by_name("app").is_none());
        let unreadable = batch.column_by_name("answer_unreadable").unwrap();
        let unreadable = unreadable
            .as_any()
            .downcast_ref::<arrow_array::StringArray>()
            .unwrap();
        assert_eq!(unreadable.value(0), "coding");
        assert!(unreadable.is_null(1));
    }

    #[test]
    fn an_empty_day_is_a_valid_file_with_the_schema() {
        let enc = ParquetEncoder::new().unwrap();
        let file = enc.finish().unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(file)).unwrap();
        assert_eq!(reader.schema().fields().len(), schema().fields().len());
    }
}
