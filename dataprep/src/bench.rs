//! Data-path throughput: packing (decode, crop, resize, encode, write) and reading (batches
//! delivered from local storage), on synthetic CelebA images.

use std::path::PathBuf;
use std::time::Instant;

use crate::celeba::Dialect;
use crate::imaging::{Crop, Recipe};
use crate::pack::{PackOptions, pack};
use crate::reader::{Dataset, LoaderOptions};
use crate::synth::{SynthOptions, synth_celeba};
use crate::{Error, Result};
use base::Location;

/// Options of [`run`].
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Synthetic images to pack.
    pub count: usize,
    /// Training resolution.
    pub size: u32,
    /// Batch size of the reader.
    pub batch: usize,
    /// Minimum seconds of reading to time.
    pub read_seconds: f64,
    /// Scratch folder (a fresh temporary folder when `None`).
    pub dir: Option<PathBuf>,
}

/// The measured figures.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// Logical cores of the machine.
    pub cores: usize,
    /// Images packed.
    pub images: usize,
    /// Packing throughput.
    pub pack_images_per_sec: f64,
    /// Reader throughput (whole batches delivered).
    pub read_images_per_sec: f64,
    /// Reader throughput in decoded pixel bytes.
    pub read_mib_per_sec: f64,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "data_path cores={} images={} pack_images_per_sec={:.1} read_images_per_sec={:.1} read_mib_per_sec={:.1}",
            self.cores, self.images, self.pack_images_per_sec, self.read_images_per_sec, self.read_mib_per_sec
        )
    }
}

/// Synthesises, packs and reads back a dataset, timing packing and reading.
pub async fn run(options: &BenchOptions) -> Result<BenchReport> {
    let dir = match &options.dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("gantry-bench-{}", std::process::id())),
    };
    let input = dir.join("celeba");
    let output = dir.join("packed");
    let synth = SynthOptions {
        count: options.count,
        seed: 1,
        dialect: Dialect::Official,
    };
    let input_for_synth = input.clone();
    tokio::task::spawn_blocking(move || synth_celeba(&input_for_synth, &synth))
        .await
        .map_err(|e| Error::joined("the synthetic CelebA writer", e))??;

    let source = crate::celeba::scan(&input)?;
    let images = source.samples.len();
    let location = Location::parse(
        output
            .to_str()
            .ok_or_else(|| Error::Options("non-UTF-8 scratch path".into()))?,
    )?;
    let summary = pack(
        source,
        Recipe::square(Crop::Center, options.size, 3),
        &location,
        &PackOptions::default(),
    )
    .await?;

    let dataset = Dataset::open_at(location).await?;
    let loader = dataset.loader(LoaderOptions {
        split: None,
        batch_size: options.batch.min(images),
        ..LoaderOptions::default()
    })?;
    let started = Instant::now();
    let mut delivered = 0usize;
    let mut epoch = 0;
    while started.elapsed().as_secs_f64() < options.read_seconds {
        let mut stream = loader.epoch(epoch, 0);
        while let Some(batch) = stream.next().await {
            delivered += batch?.len;
        }
        epoch += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    if options.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let bytes = delivered as f64 * dataset.manifest().image.bytes() as f64;
    Ok(BenchReport {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        images,
        pack_images_per_sec: summary.images_per_sec,
        read_images_per_sec: delivered as f64 / seconds,
        read_mib_per_sec: bytes / seconds / (1024.0 * 1024.0),
    })
}
