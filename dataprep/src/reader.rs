//! The streaming reader: batches of pixels and labels from a packed dataset in object storage.
//!
//! An epoch of one rank is planned up front as a sequence of (row group, row) pairs:
//! 1. the split's row groups are put in a random order drawn from (seed, epoch);
//! 2. their rows, concatenated, are cut into `world_size` equal, contiguous shares (the few rows
//!    left over by the division are dropped for that epoch), and rank r takes share r;
//! 3. the share is cut into shuffle windows, and the rows of each window are permuted.
//!
//! Every rank thus reads only its own row groups, shares are disjoint and equal, and the order
//! depends only on (seed, epoch, rank, world size). A [`Position`] (epoch, rows consumed) restores
//! the exact remainder of an epoch. Row groups of the next window are fetched while the current
//! one is consumed, and decoded batches wait in a bounded queue.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};

use arrow_array::{Array, BinaryArray, BooleanArray, FixedSizeBinaryArray, Int32Array, RecordBatch, StringArray};
use std::ops::Range;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::condition::{Classes, Condition};
use crate::imaging::decode_png;
use crate::manifest::{Encoding, MANIFEST, Manifest, Split};
use crate::schema;
use crate::{Error, Result};
use base::Location;
use base::seed::{mix, tag};

/// The task named by errors when the loader's background work panics.
const LOADER_TASK: &str = "the data loader's decoding task";

/// A packed dataset, opened: its manifest is read and checked.
#[derive(Debug, Clone)]
pub struct Dataset {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    location: Location,
    manifest: Manifest,
    /// Parquet footers, loaded once per shard.
    metadata: Mutex<HashMap<usize, ArrowReaderMetadata>>,
}

impl Dataset {
    /// Opens the dataset at `url`; fails with [`Error::NoDataset`] when it has no manifest.
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_at(Location::parse(url)?).await
    }

    /// Opens the dataset at a parsed location.
    pub async fn open_at(location: Location) -> Result<Self> {
        let bytes = location.get_opt(MANIFEST).await?.ok_or_else(|| Error::NoDataset {
            url: location.url().to_string(),
        })?;
        let manifest = Manifest::from_json(&bytes, &location.url_of(MANIFEST))?;
        Ok(Self {
            inner: Arc::new(Inner {
                location,
                manifest,
                metadata: Mutex::default(),
            }),
        })
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.inner.manifest
    }

    /// Where the dataset lives.
    pub fn location(&self) -> &Location {
        &self.inner.location
    }

    /// A loader of batches with `options`; checks the options against the dataset.
    pub fn loader(&self, options: LoaderOptions) -> Result<Loader> {
        Loader::new(self.clone(), options)
    }

    async fn shard_metadata(&self, shard: usize) -> Result<ArrowReaderMetadata> {
        if let Some(meta) = self.metadata_cache().get(&shard) {
            return Ok(meta.clone());
        }
        let info = &self.manifest().shards[shard];
        let url = self.location().url_of(&info.file);
        let path = self.location().path(&info.file);
        let store = self.location().store().clone();
        let head = store.head(&path).await.map_err(|e| match e {
            object_store::Error::NotFound { .. } => {
                Error::shard_caused(&url, "missing (listed in the manifest but not in storage)", e)
            }
            source => base::Error::Store {
                url: url.clone(),
                source,
            }
            .into(),
        })?;
        if head.size != info.bytes {
            return Err(Error::shard(
                url,
                format!(
                    "is {} bytes, the manifest says {} (truncated or replaced)",
                    head.size, info.bytes
                ),
            ));
        }
        let mut reader = ShardReader {
            store,
            path,
            size: info.bytes,
        };
        let meta = ArrowReaderMetadata::load_async(&mut reader, ArrowReaderOptions::new())
            .await
            .map_err(|e| Error::shard_caused(url, "unreadable Parquet footer", e))?;
        self.metadata_cache().insert(shard, meta.clone());
        Ok(meta)
    }

    /// The footer cache; a panic elsewhere while it was held cannot leave it inconsistent.
    fn metadata_cache(&self) -> std::sync::MutexGuard<'_, HashMap<usize, ArrowReaderMetadata>> {
        self.inner.metadata.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads and decodes one row group.
    async fn read_block(&self, block: BlockRef, classes: Option<Arc<Classes>>) -> Result<Block> {
        let info = &self.manifest().shards[block.shard];
        let url = self.location().url_of(&info.file);
        let meta = self.shard_metadata(block.shard).await?;
        let reader = ShardReader {
            store: self.location().store().clone(),
            path: self.location().path(&info.file),
            size: info.bytes,
        };
        let shard_error =
            |e: ParquetError| Error::shard_caused(&url, format!("row group {} does not decode", block.row_group), e);
        let batches: Vec<RecordBatch> = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, meta)
            .with_row_groups(vec![block.row_group])
            .with_batch_size(block.rows as usize)
            .build()
            .map_err(shard_error)?
            .try_collect()
            .await
            .map_err(shard_error)?;
        let dataset = self.clone(); // an Arc: the manifest is not copied per row group
        let decoded =
            tokio::task::spawn_blocking(move || Block::decode(dataset.manifest(), &batches, classes.as_deref()))
                .await
                .map_err(|e| Error::joined(LOADER_TASK, e))?;
        let block_data = decoded.map_err(|e| Error::Shard {
            url: url.clone(),
            message: format!("row group {}: {}", block.row_group, e.message),
            source: e.source.map(Into::into),
        })?;
        if block_data.ids.len() as u64 != block.rows {
            return Err(Error::shard(
                url,
                format!(
                    "row group {} has {} rows, the manifest says {}",
                    block.row_group,
                    block_data.ids.len(),
                    block.rows
                ),
            ));
        }
        Ok(block_data)
    }
}

/// Parquet's view of a shard in object storage, whose size the manifest gives (so the footer is
/// read with one ranged request).
#[derive(Debug, Clone)]
struct ShardReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
}

fn parquet_error(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for ShardReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move { self.store.get_range(&self.path, range).await.map_err(parquet_error) }.boxed()
    }

    fn get_byte_ranges(&mut self, ranges: Vec<Range<u64>>) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move { self.store.get_ranges(&self.path, &ranges).await.map_err(parquet_error) }.boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

/// Options of a [`Loader`].
#[derive(Debug, Clone)]
pub struct LoaderOptions {
    /// Only rows of this split (all rows when `None`).
    pub split: Option<Split>,
    /// Rows per batch on this rank (the global batch divided by the world size).
    pub batch_size: usize,
    /// Seed of the shuffle.
    pub seed: u64,
    /// Shuffle row groups and rows (false: storage order, still partitioned by rank).
    pub shuffle: bool,
    /// Rows mixed together by the in-memory shuffle (rounded up to whole batches).
    pub shuffle_window: usize,
    /// This process's rank, `0..world_size`.
    pub rank: usize,
    /// Number of ranks sharing each epoch.
    pub world_size: usize,
    /// Decoded batches kept ready ahead of the consumer.
    pub prefetch: usize,
    /// Computes [`Batch::classes`] when set.
    pub condition: Option<Condition>,
}

impl Default for LoaderOptions {
    fn default() -> Self {
        Self {
            split: Some(Split::Train),
            batch_size: 128,
            seed: 0,
            shuffle: true,
            shuffle_window: 4096,
            rank: 0,
            world_size: 1,
            prefetch: 4,
            condition: None,
        }
    }
}

/// Where a rank is in the data: the epoch and the rows of it this rank has consumed.
/// Saved in checkpoints; a loader started from it yields exactly the rest of the epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The epoch, from 0.
    pub epoch: u64,
    /// Rows of the epoch already consumed by this rank.
    pub offset: u64,
}

/// One batch.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Rows in the batch.
    pub len: usize,
    /// HWC u8 pixels of every row, back to back (`len * height * width * channels`).
    pub pixels: Vec<u8>,
    /// Class of every row under the loader's condition (empty without one).
    pub classes: Vec<i64>,
    /// Attribute values, row-major (`len * attributes`).
    pub attributes: Vec<bool>,
    /// Row ids (source file names).
    pub ids: Vec<String>,
    /// The epoch this batch belongs to.
    pub epoch: u64,
    /// The position after this batch: save it to resume after it.
    pub next: Position,
}

/// A row group: the unit of I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct BlockRef {
    shard: usize,
    row_group: usize,
    rows: u64,
}

/// The decoded row groups of one shuffle window, by block index.
type WindowBlocks = HashMap<u32, Arc<Block>>;

/// A decoded row group.
#[derive(Debug)]
struct Block {
    pixels: Vec<u8>,
    image_bytes: usize,
    classes: Vec<i64>,
    attributes: Vec<bool>,
    attribute_count: usize,
    ids: Vec<String>,
}

/// Why a row group does not decode: our description, and the PNG decoder's error where it failed.
#[derive(Debug)]
struct Undecodable {
    message: String,
    source: Option<image::ImageError>,
}

impl From<String> for Undecodable {
    fn from(message: String) -> Self {
        Self { message, source: None }
    }
}

impl From<&str> for Undecodable {
    fn from(message: &str) -> Self {
        message.to_string().into()
    }
}

impl Block {
    fn decode(manifest: &Manifest, batches: &[RecordBatch], classes: Option<&Classes>) -> Result<Self, Undecodable> {
        let image_bytes = manifest.image.bytes();
        let attribute_count = manifest.attributes.len();
        let mut block = Block {
            pixels: Vec::new(),
            image_bytes,
            classes: Vec::new(),
            attributes: Vec::new(),
            attribute_count,
            ids: Vec::new(),
        };
        for batch in batches {
            let column = |name: &str| {
                batch
                    .column_by_name(name)
                    .ok_or_else(|| format!("column {name:?} is missing"))
            };
            let ids = column(schema::ID)?
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or("column id is not a string column")?;
            block
                .ids
                .extend(ids.iter().map(|id| id.unwrap_or_default().to_string()));
            let image = column(schema::IMAGE)?;
            match manifest.image.encoding {
                Encoding::Raw => {
                    let image = image
                        .as_any()
                        .downcast_ref::<FixedSizeBinaryArray>()
                        .filter(|a| a.value_length() as usize == image_bytes)
                        .ok_or("column image does not hold raw images of the manifest's shape")?;
                    let start = image.offset() * image_bytes;
                    let pixels = image
                        .value_data()
                        .get(start..start + image.len() * image_bytes)
                        .ok_or("column image holds fewer bytes than its rows")?;
                    block.pixels.extend_from_slice(pixels);
                }
                Encoding::Png => {
                    let image = image
                        .as_any()
                        .downcast_ref::<BinaryArray>()
                        .ok_or("column image is not binary")?;
                    for png in image.iter() {
                        let pixels =
                            decode_png(png.unwrap_or_default(), manifest.image.channels).map_err(|e| Undecodable {
                                message: "corrupt PNG".into(),
                                source: Some(e),
                            })?;
                        if pixels.len() != image_bytes {
                            return Err("a PNG image does not have the manifest's shape".into());
                        }
                        block.pixels.extend_from_slice(&pixels);
                    }
                }
            }
            let mut attributes = Vec::with_capacity(attribute_count);
            for name in &manifest.attributes {
                let values = column(name)?
                    .as_any()
                    .downcast_ref::<BooleanArray>()
                    .ok_or_else(|| format!("column {name:?} is not boolean"))?
                    .clone();
                attributes.push(values);
            }
            let labels = match batch.column_by_name(schema::LABEL) {
                Some(labels) => Some(
                    labels
                        .as_any()
                        .downcast_ref::<Int32Array>()
                        .ok_or("column label is not int32")?
                        .clone(),
                ),
                None if classes.is_some_and(|c| c.columns.is_empty()) => {
                    return Err("column label is missing".into());
                }
                None => None,
            };
            for row in 0..batch.num_rows() {
                let start = block.attributes.len();
                block.attributes.extend(attributes.iter().map(|a| a.value(row)));
                if let Some(classes) = classes {
                    let label = labels.as_ref().map_or(0, |l| l.value(row));
                    let class = classes.class_of(label, &block.attributes[start..]);
                    if class < 0 || class as usize >= classes.len() {
                        return Err(format!("row {row}: label {label} is not a class of the manifest").into());
                    }
                    block.classes.push(class);
                }
            }
        }
        Ok(block)
    }
}

/// Produces batches of one rank from a [`Dataset`].
#[derive(Debug, Clone)]
pub struct Loader {
    dataset: Dataset,
    options: LoaderOptions,
    blocks: Vec<BlockRef>,
    classes: Option<Arc<Classes>>,
    window: usize,
}

impl Loader {
    fn new(dataset: Dataset, options: LoaderOptions) -> Result<Self> {
        let manifest = dataset.manifest();
        let mut problems = Vec::new();
        if options.batch_size == 0 {
            problems.push("batch_size must be at least 1".to_string());
        }
        if options.world_size == 0 {
            problems.push("world_size must be at least 1".to_string());
        } else if options.rank >= options.world_size {
            problems.push(format!(
                "rank {} is not below world_size {}",
                options.rank, options.world_size
            ));
        }
        if !problems.is_empty() {
            return Err(Error::Options(problems.join("; ")));
        }
        let classes = options
            .condition
            .as_ref()
            .map(|c| c.resolve(manifest))
            .transpose()?
            .map(Arc::new);
        let blocks: Vec<BlockRef> = manifest
            .shards
            .iter()
            .enumerate()
            .filter(|(_, shard)| options.split.is_none_or(|split| shard.split == split))
            .flat_map(|(shard, info)| {
                info.row_groups
                    .iter()
                    .enumerate()
                    .map(move |(row_group, &rows)| BlockRef { shard, row_group, rows })
            })
            .collect();
        let window = options.shuffle_window.max(1).div_ceil(options.batch_size) * options.batch_size;
        let loader = Self {
            dataset,
            options,
            blocks,
            classes,
            window,
        };
        if loader.batches_per_epoch() == 0 {
            let split = loader
                .options
                .split
                .map_or("all splits".to_string(), |s| format!("split {s}"));
            return Err(Error::Options(format!(
                "{split} of {} has {} rows: {} per rank for {} ranks, less than one batch of {}",
                loader.dataset.location().url(),
                loader.rows(),
                loader.rows_per_rank(),
                loader.options.world_size,
                loader.options.batch_size
            )));
        }
        Ok(loader)
    }

    /// Rows of the selected split(s).
    pub fn rows(&self) -> u64 {
        self.blocks.iter().map(|b| b.rows).sum()
    }

    /// Rows of each epoch this rank gets.
    pub fn rows_per_rank(&self) -> u64 {
        self.rows() / self.options.world_size as u64
    }

    /// Whole batches per epoch on this rank (a last partial batch is dropped).
    pub fn batches_per_epoch(&self) -> u64 {
        self.rows_per_rank() / self.options.batch_size as u64
    }

    /// Class names under the loader's condition.
    pub fn classes(&self) -> Option<&Classes> {
        self.classes.as_deref()
    }

    /// The dataset.
    pub fn dataset(&self) -> &Dataset {
        &self.dataset
    }

    /// This rank's sequence of (block index, row) for `epoch`.
    fn plan(&self, epoch: u64) -> Vec<(u32, u32)> {
        let o = &self.options;
        let mut order: Vec<usize> = (0..self.blocks.len()).collect();
        if o.shuffle {
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(&[o.seed, epoch, tag::EPOCH_ORDER])));
        }
        let share = self.rows_per_rank() as usize;
        let mut sequence: Vec<(u32, u32)> = order
            .iter()
            .flat_map(|&b| (0..self.blocks[b].rows as u32).map(move |row| (b as u32, row)))
            .skip(o.rank * share)
            .take(share)
            .collect();
        if o.shuffle {
            for (w, window) in sequence.chunks_mut(self.window).enumerate() {
                let seed = mix(&[
                    o.seed,
                    epoch,
                    tag::WINDOW_SHUFFLE,
                    o.rank as u64,
                    o.world_size as u64,
                    w as u64,
                ]);
                window.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
            }
        }
        sequence
    }

    /// Ids of the rows this rank gets in `epoch`, in order (one entry per row of every whole batch).
    pub async fn epoch_ids(&self, epoch: u64) -> Result<Vec<String>> {
        let mut stream = self.epoch(epoch, 0);
        let mut ids = Vec::new();
        while let Some(batch) = stream.next().await {
            ids.extend(batch?.ids);
        }
        Ok(ids)
    }

    /// Batches from `from` onwards, across epochs, without end. Must be called within a tokio runtime.
    pub fn stream(&self, from: Position) -> BatchStream {
        self.spawn(from, false)
    }

    /// The batches of `epoch` from row `offset` to the end of the epoch. Must be called within a tokio runtime.
    pub fn epoch(&self, epoch: u64, offset: u64) -> BatchStream {
        self.spawn(Position { epoch, offset }, true)
    }

    fn spawn(&self, from: Position, one_epoch: bool) -> BatchStream {
        let loader = self.clone();
        BatchStream::spawn(self.options.prefetch.max(1), move |tx| async move {
            loader.produce(from, one_epoch, &tx).await
        })
    }

    async fn load_window(&self, blocks: Vec<u32>) -> Result<WindowBlocks> {
        futures::stream::iter(blocks)
            .map(|b| {
                let dataset = self.dataset.clone();
                let block = self.blocks[b as usize];
                let classes = self.classes.clone();
                async move { Ok::<_, Error>((b, Arc::new(dataset.read_block(block, classes).await?))) }
            })
            .buffer_unordered(8)
            .try_collect()
            .await
    }

    async fn produce(&self, from: Position, one_epoch: bool, tx: &mpsc::Sender<Result<Batch>>) -> Result<()> {
        let b = self.options.batch_size;
        let per_epoch = self.batches_per_epoch() as usize * b;
        let mut position = from;
        if position.offset as usize > per_epoch {
            return Err(Error::Options(format!(
                "position {} of epoch {} is past the {per_epoch} rows of an epoch on this rank",
                position.offset, position.epoch
            )));
        }
        loop {
            let epoch = position.epoch;
            let sequence = Arc::new(self.plan(epoch));
            let window_blocks = |w: usize| -> Vec<u32> {
                let end = ((w + 1) * self.window).min(per_epoch);
                let set: HashSet<u32> = sequence[w * self.window..end].iter().map(|&(block, _)| block).collect();
                set.into_iter().collect()
            };
            let windows = per_epoch.div_ceil(self.window);
            let mut start = position.offset as usize;
            let mut current: Option<(usize, WindowBlocks)> = None;
            let mut next: Option<(usize, tokio::task::JoinHandle<Result<WindowBlocks>>)> = None;
            while start < per_epoch {
                let w = start / self.window;
                if current.as_ref().is_none_or(|(cw, _)| *cw != w) {
                    let blocks = match next.take() {
                        Some((nw, handle)) if nw == w => handle.await.map_err(|e| Error::joined(LOADER_TASK, e))??,
                        _ => self.load_window(window_blocks(w)).await?,
                    };
                    current = Some((w, blocks));
                    if w + 1 < windows {
                        let loader = self.clone();
                        let wanted = window_blocks(w + 1);
                        next = Some((w + 1, tokio::spawn(async move { loader.load_window(wanted).await })));
                    }
                }
                let blocks = &current.as_ref().expect("window loaded").1;
                let end = start + b;
                let next_position = if end == per_epoch {
                    Position {
                        epoch: epoch + 1,
                        offset: 0,
                    }
                } else {
                    Position {
                        epoch,
                        offset: end as u64,
                    }
                };
                let batch = self.assemble(&sequence[start..end], blocks, epoch, next_position);
                if tx.send(Ok(batch)).await.is_err() {
                    return Ok(()); // the consumer is gone
                }
                start = end;
            }
            if one_epoch {
                return Ok(());
            }
            position = Position {
                epoch: epoch + 1,
                offset: 0,
            };
        }
    }

    fn assemble(&self, rows: &[(u32, u32)], blocks: &HashMap<u32, Arc<Block>>, epoch: u64, next: Position) -> Batch {
        let image_bytes = self.dataset.manifest().image.bytes();
        let attribute_count = self.dataset.manifest().attributes.len();
        let mut batch = Batch {
            len: rows.len(),
            pixels: Vec::with_capacity(rows.len() * image_bytes),
            classes: Vec::with_capacity(rows.len()),
            attributes: Vec::with_capacity(rows.len() * attribute_count),
            ids: Vec::with_capacity(rows.len()),
            epoch,
            next,
        };
        for &(b, row) in rows {
            let block = &blocks[&b];
            let row = row as usize;
            batch
                .pixels
                .extend_from_slice(&block.pixels[row * block.image_bytes..(row + 1) * block.image_bytes]);
            if !block.classes.is_empty() {
                batch.classes.push(block.classes[row]);
            }
            let a = block.attribute_count;
            batch
                .attributes
                .extend_from_slice(&block.attributes[row * a..(row + 1) * a]);
            batch.ids.push(block.ids[row].clone());
        }
        batch
    }
}

/// Batches produced in the background; dropping it stops the producer.
#[derive(Debug)]
pub struct BatchStream {
    rx: mpsc::Receiver<Result<Batch>>,
}

impl BatchStream {
    /// A stream fed by the task `produce(sender)`, with up to `capacity` batches waiting. When
    /// that task fails or panics, its error is the stream's last item; a panic becomes
    /// [`Error::Panicked`] with the panic's message, so the consumer learns why the stream ended.
    fn spawn<P, F>(capacity: usize, produce: P) -> Self
    where
        P: FnOnce(mpsc::Sender<Result<Batch>>) -> F,
        F: Future<Output = Result<()>> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(capacity);
        let producer = AssertUnwindSafe(produce(tx.clone())).catch_unwind();
        tokio::spawn(async move {
            let error = match producer.await {
                Ok(Ok(())) => return,
                Ok(Err(error)) => error,
                Err(panic) => Error::panicked(LOADER_TASK, panic),
            };
            // Fails only when the consumer is gone.
            let _ = tx.send(Err(error)).await;
        });
        Self { rx }
    }

    /// The next batch, or `None` at the end of a one-epoch stream. After an error the stream ends.
    pub async fn next(&mut self) -> Option<Result<Batch>> {
        self.rx.recv().await
    }

    /// [`BatchStream::next`] for synchronous callers (not from within an async task).
    pub fn blocking_next(&mut self) -> Option<Result<Batch>> {
        self.rx.blocking_recv()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty_batch() -> Batch {
        Batch {
            len: 0,
            pixels: Vec::new(),
            classes: Vec::new(),
            attributes: Vec::new(),
            ids: Vec::new(),
            epoch: 0,
            next: Position::default(),
        }
    }

    /// Stands for decoding code that meets a row it cannot handle.
    fn decode_row(row: usize) -> Result<()> {
        panic!("row {row} has no pixels")
    }

    #[tokio::test]
    async fn a_panic_while_producing_is_the_last_item_of_the_stream() {
        let mut stream = BatchStream::spawn(1, |tx| async move {
            tx.send(Ok(empty_batch())).await.expect("consumer alive");
            decode_row(7)
        });
        assert!(stream.next().await.expect("first batch").is_ok());
        let error = stream.next().await.expect("the panic as an item").unwrap_err();
        assert!(matches!(error, Error::Panicked { .. }), "{error:?}");
        assert_eq!(
            error.to_string(),
            "the data loader's decoding task panicked: row 7 has no pixels"
        );
        assert!(stream.next().await.is_none(), "the stream ends after the error");
    }

    #[tokio::test]
    async fn a_producer_error_is_the_last_item_and_success_just_ends_the_stream() {
        let mut failed = BatchStream::spawn(1, |_| async { Err(Error::Options("bad".into())) });
        assert!(matches!(failed.next().await, Some(Err(Error::Options(_)))));
        assert!(failed.next().await.is_none());
        let mut done = BatchStream::spawn(1, |tx| async move {
            tx.send(Ok(empty_batch())).await.expect("consumer alive");
            Ok(())
        });
        assert!(done.next().await.expect("a batch").is_ok());
        assert!(done.next().await.is_none());
    }
}
