//! Shared fixtures.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use base::Location;
use dataprep::celeba::Dialect;
use dataprep::imaging::{Crop, Recipe};
use dataprep::pack::{PackOptions, PackSummary, pack};
use dataprep::synth::{SynthOptions, synth_celeba};
use dataprep::{Dataset, LoaderOptions, Split};

/// A fresh `memory://` URL, unique within the test process.
pub(crate) fn memory_url(name: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("memory://{name}-{}/data", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Writes `count` synthetic CelebA images in `dialect` under `dir`.
pub(crate) fn synth(dir: &Path, count: usize, dialect: Dialect) {
    synth_celeba(
        dir,
        &SynthOptions {
            count,
            seed: 7,
            dialect,
        },
    )
    .expect("synth");
}

/// Small shards and row groups so that even tiny fixtures span several of each.
pub(crate) fn small_options() -> PackOptions {
    PackOptions {
        shard_mb: 0.05,
        row_group: 4,
        ..PackOptions::default()
    }
}

/// Scans a CelebA folder and packs it at 32x32 into `url`.
pub(crate) async fn pack_celeba(input: &Path, url: &str, options: &PackOptions) -> PackSummary {
    let source = dataprep::celeba::scan(input).expect("scan");
    let location = Location::parse(url).expect("url");
    pack(source, Recipe::square(Crop::Center, 32, 3), &location, options)
        .await
        .expect("pack")
}

/// Every row of the dataset in storage order (no shuffle), as (id, pixels, attributes, classes).
pub(crate) async fn read_all(
    url: &str,
    split: Option<Split>,
    condition: Option<&str>,
) -> Vec<(String, Vec<u8>, Vec<bool>, i64)> {
    let dataset = Dataset::open(url).await.expect("open");
    let bytes = dataset.manifest().image.bytes();
    let attrs = dataset.manifest().attributes.len();
    let loader = dataset
        .loader(LoaderOptions {
            split,
            batch_size: 1,
            shuffle: false,
            condition: condition.map(|c| c.parse().expect("condition")),
            ..LoaderOptions::default()
        })
        .expect("loader");
    let mut rows = Vec::new();
    let mut stream = loader.epoch(0, 0);
    while let Some(batch) = stream.next().await {
        let batch = batch.expect("batch");
        for i in 0..batch.len {
            rows.push((
                batch.ids[i].clone(),
                batch.pixels[i * bytes..(i + 1) * bytes].to_vec(),
                batch.attributes[i * attrs..(i + 1) * attrs].to_vec(),
                batch.classes.get(i).copied().unwrap_or(-1),
            ));
        }
    }
    rows
}

/// Parses an official `list_attr_celeba.txt` into (file, values).
pub(crate) fn official_attributes(dir: &Path) -> Vec<(String, Vec<bool>)> {
    let text = std::fs::read_to_string(dir.join("list_attr_celeba.txt")).expect("attr file");
    text.lines()
        .skip(2)
        .map(|line| {
            let mut fields = line.split_whitespace();
            let file = fields.next().expect("file").to_string();
            (file, fields.map(|v| v == "1").collect())
        })
        .collect()
}
