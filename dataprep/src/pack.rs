//! `dataprep pack`: decodes, crops and resizes a scanned [`Source`] on all cores and writes
//! Parquet shards plus `manifest.json` to a [`Location`].
//!
//! Commit protocol: the old manifest is deleted first and the new one written last, so a pack that
//! fails or is interrupted never leaves a dataset that looks complete; old shards are removed
//! before new ones are written, so two packs never mix.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::builder::{BooleanBuilder, FixedSizeBinaryBuilder, Int32Builder, StringBuilder};
use arrow_array::{ArrayRef, BinaryArray, RecordBatch};
use arrow_schema::SchemaRef;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::imaging::{Recipe, encode_png};
use crate::manifest::{
    BinaryCount, Encoding, FORMAT, ImageInfo, MANIFEST, MAX_LISTED_SKIPS, Manifest, SCHEMA_VERSION, ShardInfo, Skipped,
    SourceInfo, Split, SplitStats,
};
use crate::schema::{self, shard_schema};
use crate::source::{Sample, Source};
use crate::{Error, Result};
use base::Location;

/// Options of a pack.
#[derive(Debug, Clone)]
pub struct PackOptions {
    /// Target shard size in MiB (a shard closes at the first row-group boundary past it).
    pub shard_mb: f64,
    /// Rows per Parquet row group (the reader's unit of I/O and shuffling).
    pub row_group: usize,
    /// Pixel storage.
    pub encoding: Encoding,
    /// Show a progress bar (on a terminal); otherwise progress goes to the log.
    pub progress: bool,
    /// Write into a prefix that holds files of something else (they stay, beside the dataset).
    pub force: bool,
}

impl Default for PackOptions {
    fn default() -> Self {
        Self {
            shard_mb: 64.0,
            row_group: 512,
            encoding: Encoding::Raw,
            progress: false,
            force: false,
        }
    }
}

impl PackOptions {
    fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        if self.shard_mb.is_nan() || self.shard_mb <= 0.0 {
            problems.push(format!("shard size must be positive, got {} MiB", self.shard_mb));
        }
        if self.row_group == 0 {
            problems.push("row group size must be at least 1".to_string());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Options(problems.join("; ")))
        }
    }
}

/// What a pack did.
#[derive(Debug, Clone)]
pub struct PackSummary {
    /// The manifest that was committed.
    pub manifest: Manifest,
    /// Inputs decoded per second of wall time.
    pub images_per_sec: f64,
    /// Wall time of the pack.
    pub seconds: f64,
}

/// Inputs handed to the decoder pool at once.
const DECODE_CHUNK: usize = 256;

/// Packs `source` into `output` with `recipe`.
pub async fn pack(source: Source, recipe: Recipe, output: &Location, options: &PackOptions) -> Result<PackSummary> {
    options.validate()?;
    let started = Instant::now();
    // Only into an empty prefix or a dataset of ours, complete or interrupted (the marker goes
    // first); datasets from before the marker are known by their manifest or shards.
    let legacy = |name: &str| name == MANIFEST || (name.starts_with("shard-") && name.ends_with(".parquet"));
    base::access::claim(output, base::access::DATASET_MARKER, legacy, options.force).await?;
    // Uncommit whatever was there, then clear its shards.
    output.delete(MANIFEST).await?;
    for name in output.list_names().await? {
        if name.starts_with("shard-") && name.ends_with(".parquet") {
            output.delete(&name).await?;
        }
    }

    let image = ImageInfo {
        height: recipe.out_height(),
        width: recipe.out_width(),
        channels: recipe.channels,
        encoding: options.encoding,
    };
    let schema = shard_schema(&image, !source.classes.is_empty(), &source.attributes);
    let Source {
        kind,
        dialect,
        input,
        attributes,
        classes,
        mut samples,
        skipped: mut skips,
    } = source;
    // Shards hold one split each, so a reader selects a split by selecting shards.
    samples.sort_by_key(|s| s.split);
    let total = samples.len() as u64 + skips.len() as u64;

    let progress = Progress::new(options.progress, total);
    progress.inc(skips.len() as u64);
    let mut writer = ShardWriter::new(output.clone(), schema, image.clone(), options, classes.len());
    let recipe = Arc::new(recipe);
    let chunks: Vec<Vec<Sample>> = samples.chunks(DECODE_CHUNK).map(<[Sample]>::to_vec).collect();
    drop(samples);
    let mut decoded = futures::stream::iter(chunks)
        .map(|chunk| {
            let recipe = recipe.clone();
            tokio::task::spawn_blocking(move || decode_chunk(chunk, &recipe))
        })
        .buffered(4);
    while let Some(result) = decoded.next().await {
        let rows = result.map_err(|e| Error::joined("a pack decoding task", e))?;
        for (sample, pixels) in rows {
            progress.inc(1);
            match pixels {
                Ok(pixels) => writer.push(sample, pixels).await?,
                Err(reason) => {
                    tracing::debug!(id = %sample.id, %reason, "skipped");
                    skips.push(Skipped { id: sample.id, reason })
                }
            }
        }
    }
    drop(decoded);
    let (shards, splits) = writer.finish().await?;
    progress.finish();

    let manifest = Manifest {
        format: FORMAT.to_string(),
        version: SCHEMA_VERSION,
        created_by: format!("dataprep {}", env!("CARGO_PKG_VERSION")),
        source: SourceInfo {
            kind: kind.to_string(),
            dialect,
            input: input.display().to_string(),
        },
        image,
        recipe: Arc::unwrap_or_clone(recipe),
        attributes,
        classes,
        rows: shards.iter().map(|s| s.rows).sum(),
        splits,
        shards,
        skipped_count: skips.len() as u64,
        skipped: skips.into_iter().take(MAX_LISTED_SKIPS).collect(),
    };
    let json = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
    output.put(MANIFEST, json).await?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(PackSummary {
        images_per_sec: total as f64 / seconds.max(1e-9),
        seconds,
        manifest,
    })
}

/// Decodes a chunk of samples in parallel, keeping their order.
fn decode_chunk(chunk: Vec<Sample>, recipe: &Recipe) -> Vec<(Sample, Result<Vec<u8>, String>)> {
    chunk
        .into_par_iter()
        .map_init(fast_image_resize::Resizer::new, |resizer, sample| {
            let pixels = sample.input.load(recipe, resizer);
            (sample, pixels)
        })
        .collect()
}

/// Progress on a terminal bar, or in the log every few seconds.
struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    done: std::sync::atomic::AtomicU64,
    last_log: std::sync::Mutex<Instant>,
}

impl Progress {
    fn new(show_bar: bool, total: u64) -> Self {
        let bar = show_bar.then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template("{bar:40} {pos}/{len} images  {per_sec}  eta {eta}")
                    .expect("valid template"),
            );
            bar
        });
        Self {
            bar,
            total,
            done: Default::default(),
            last_log: std::sync::Mutex::new(Instant::now()),
        }
    }

    fn inc(&self, n: u64) {
        let done = self.done.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
        match &self.bar {
            Some(bar) => bar.inc(n),
            None => {
                let mut last = self.last_log.lock().expect("progress lock");
                if last.elapsed() >= Duration::from_secs(5) {
                    *last = Instant::now();
                    tracing::info!(done, total = self.total, "packing");
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Rows of the row group being filled.
struct Pending {
    ids: Vec<String>,
    labels: Vec<i32>,
    images: Vec<Vec<u8>>,
    attributes: Vec<Vec<bool>>,
}

/// Accumulates rows into row groups and row groups into shards, uploading each finished shard.
struct ShardWriter {
    output: Location,
    schema: SchemaRef,
    image: ImageInfo,
    props: WriterProperties,
    row_group: usize,
    shard_bytes: usize,
    classes: usize,
    split: Option<Split>,
    writer: Option<ArrowWriter<Vec<u8>>>,
    row_groups: Vec<u64>,
    pending: Pending,
    shards: Vec<ShardInfo>,
    stats: BTreeMap<Split, SplitStats>,
    attribute_names: Vec<String>,
}

impl ShardWriter {
    fn new(output: Location, schema: SchemaRef, image: ImageInfo, options: &PackOptions, classes: usize) -> Self {
        let zstd = Compression::ZSTD(ZstdLevel::try_new(3).expect("valid zstd level"));
        let image_column = ColumnPath::from(schema::IMAGE);
        let props = WriterProperties::builder()
            .set_compression(zstd)
            // Raw pixels stay uncompressed so reading is a copy; PNG is compressed already.
            .set_column_compression(image_column.clone(), Compression::UNCOMPRESSED)
            .set_column_dictionary_enabled(image_column.clone(), false)
            .set_column_statistics_enabled(image_column, EnabledStatistics::None)
            .set_max_row_group_row_count(Some(options.row_group))
            .set_created_by(format!("gantry dataprep {}", env!("CARGO_PKG_VERSION")))
            .build();
        let attribute_names = schema
            .fields()
            .iter()
            .skip_while(|f| f.name() != schema::IMAGE)
            .skip(1)
            .map(|f| f.name().clone())
            .collect();
        Self {
            output,
            schema,
            image,
            props,
            row_group: options.row_group,
            shard_bytes: (options.shard_mb * 1024.0 * 1024.0) as usize,
            classes,
            split: None,
            writer: None,
            row_groups: Vec::new(),
            pending: Pending {
                ids: Vec::new(),
                labels: Vec::new(),
                images: Vec::new(),
                attributes: Vec::new(),
            },
            shards: Vec::new(),
            stats: BTreeMap::new(),
            attribute_names,
        }
    }

    async fn push(&mut self, sample: Sample, pixels: Vec<u8>) -> Result<()> {
        if self.split != Some(sample.split) {
            self.close_shard().await?;
            self.split = Some(sample.split);
        }
        let stats = self.stats.entry(sample.split).or_default();
        stats.rows += 1;
        if let Some(label) = sample.label {
            stats.classes.resize(self.classes, 0);
            stats.classes[label as usize] += 1;
        }
        for (name, &value) in self.attribute_names.iter().zip(&sample.attributes) {
            let count: &mut BinaryCount = stats.attributes.entry(name.clone()).or_default();
            if value { count.yes += 1 } else { count.no += 1 }
        }
        let pixels =
            match self.image.encoding {
                Encoding::Raw => pixels,
                Encoding::Png => encode_png(&pixels, self.image.width, self.image.height, self.image.channels)
                    .map_err(|source| Error::Image {
                        path: sample.id.clone(),
                        source,
                    })?,
            };
        self.pending.ids.push(sample.id);
        self.pending.labels.push(sample.label.map_or(0, |l| l as i32));
        self.pending.images.push(pixels);
        self.pending.attributes.push(sample.attributes);
        if self.pending.ids.len() >= self.row_group {
            self.flush_row_group()?;
            let writer = self.writer.as_ref().expect("writer open after a flush");
            if writer.bytes_written() + writer.in_progress_size() >= self.shard_bytes {
                self.close_shard().await?;
            }
        }
        Ok(())
    }

    fn shard_name(&self) -> String {
        format!("shard-{:05}.parquet", self.shards.len())
    }

    fn flush_row_group(&mut self) -> Result<()> {
        let rows = self.pending.ids.len();
        if rows == 0 {
            return Ok(());
        }
        let split = self.split.expect("rows imply a split");
        let batch = self.build_batch(split)?;
        let url = self.output.url_of(&self.shard_name());
        if self.writer.is_none() {
            let writer =
                ArrowWriter::try_new(Vec::new(), self.schema.clone(), Some(self.props.clone())).map_err(|source| {
                    Error::Parquet {
                        url: url.clone(),
                        source,
                    }
                })?;
            self.writer = Some(writer);
        }
        let writer = self.writer.as_mut().expect("writer just opened");
        writer.write(&batch).map_err(|source| Error::Parquet {
            url: url.clone(),
            source,
        })?;
        writer.flush().map_err(|source| Error::Parquet { url, source })?;
        self.row_groups.push(rows as u64);
        Ok(())
    }

    fn build_batch(&mut self, split: Split) -> Result<RecordBatch> {
        let pending = std::mem::replace(
            &mut self.pending,
            Pending {
                ids: Vec::new(),
                labels: Vec::new(),
                images: Vec::new(),
                attributes: Vec::new(),
            },
        );
        let rows = pending.ids.len();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        let mut ids = StringBuilder::new();
        pending.ids.iter().for_each(|id| ids.append_value(id));
        columns.push(Arc::new(ids.finish()));
        let mut splits = StringBuilder::new();
        (0..rows).for_each(|_| splits.append_value(split.as_str()));
        columns.push(Arc::new(splits.finish()));
        if self.classes > 0 {
            let mut labels = Int32Builder::with_capacity(rows);
            labels.append_slice(&pending.labels);
            columns.push(Arc::new(labels.finish()));
        }
        match self.image.encoding {
            Encoding::Raw => {
                let mut images = FixedSizeBinaryBuilder::with_capacity(rows, self.image.bytes() as i32);
                for image in &pending.images {
                    images.append_value(image).expect("image size matches the schema");
                }
                columns.push(Arc::new(images.finish()));
            }
            Encoding::Png => {
                columns.push(Arc::new(BinaryArray::from_iter_values(pending.images.iter())));
            }
        }
        for a in 0..self.attribute_names.len() {
            let mut values = BooleanBuilder::with_capacity(rows);
            pending.attributes.iter().for_each(|row| values.append_value(row[a]));
            columns.push(Arc::new(values.finish()));
        }
        let url = self.output.url_of(&self.shard_name());
        RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| Error::Parquet { url, source: e.into() })
    }

    async fn close_shard(&mut self) -> Result<()> {
        self.flush_row_group()?;
        let Some(writer) = self.writer.take() else {
            return Ok(());
        };
        let name = self.shard_name();
        let bytes = writer.into_inner().map_err(|source| Error::Parquet {
            url: self.output.url_of(&name),
            source,
        })?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let info = ShardInfo {
            file: name.clone(),
            split: self.split.expect("an open shard has a split"),
            rows: self.row_groups.iter().sum(),
            row_groups: std::mem::take(&mut self.row_groups),
            bytes: bytes.len() as u64,
            sha256,
        };
        self.output.put(&name, bytes).await?;
        tracing::info!(shard = %name, split = %info.split, rows = info.rows, bytes = info.bytes, "shard written");
        self.shards.push(info);
        Ok(())
    }

    async fn finish(mut self) -> Result<(Vec<ShardInfo>, BTreeMap<Split, SplitStats>)> {
        self.close_shard().await?;
        Ok((self.shards, self.stats))
    }
}
