//! `dataprep inspect`: a text summary of a manifest and a preview grid of real rows per class.

use std::fmt::Write;

use crate::Result;
use crate::condition::Condition;
use crate::grid::Grid;
use crate::imaging::Crop;
use crate::manifest::{Encoding, Manifest, Split};
use crate::reader::{Dataset, LoaderOptions};

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// A human-readable summary of a dataset's manifest.
pub fn summary(manifest: &Manifest, url: &str) -> String {
    let mut out = String::new();
    let source = &manifest.source;
    let dialect = source
        .dialect
        .as_deref()
        .map(|d| format!(", {d} layout"))
        .unwrap_or_default();
    let _ = writeln!(out, "dataset   {url}");
    let _ = writeln!(out, "source    {}{dialect}, from {}", source.kind, source.input);
    let image = &manifest.image;
    let recipe = &manifest.recipe;
    let crop = match recipe.crop {
        Crop::Center => "center crop".to_string(),
        Crop::None => "no crop".to_string(),
        Crop::Box { x, y, width, height } => format!("crop box {width}x{height}+{x}+{y}"),
    };
    let encoding = match image.encoding {
        Encoding::Raw => "raw HWC",
        Encoding::Png => "PNG",
    };
    let pad = if recipe.pad > 0 {
        format!(", padded by {}", recipe.pad)
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "images    {}x{}x{} {encoding}; {crop}, {} resize to {}x{}{pad}",
        image.height, image.width, image.channels, recipe.filter, recipe.width, recipe.height
    );
    let bytes: u64 = manifest.shards.iter().map(|s| s.bytes).sum();
    let _ = writeln!(
        out,
        "rows      {} in {} shards ({})",
        manifest.rows,
        manifest.shards.len(),
        mib(bytes)
    );
    let splits: Vec<Split> = manifest.splits.keys().copied().collect();
    let _ = write!(out, "splits   ");
    for split in &splits {
        let _ = write!(out, " {split} {}", manifest.split_rows(*split));
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "skipped   {}", manifest.skipped_count);
    for skip in manifest.skipped.iter().take(10) {
        let _ = writeln!(out, "          {}: {}", skip.id, skip.reason);
    }
    if manifest.skipped_count > 10 {
        let _ = writeln!(
            out,
            "          ... and {} more (listed in manifest.json)",
            manifest.skipped_count - 10
        );
    }
    let header: String = splits.iter().map(|s| format!("{:>16}", s.as_str())).collect();
    if !manifest.classes.is_empty() {
        let _ = writeln!(out, "\n{:<24}{header}", "class");
        for (i, class) in manifest.classes.iter().enumerate() {
            let cells: String = splits
                .iter()
                .map(|s| format!("{:>16}", manifest.splits[s].classes.get(i).copied().unwrap_or(0)))
                .collect();
            let _ = writeln!(out, "{i:>2} {class:<21}{cells}");
        }
    }
    if !manifest.attributes.is_empty() {
        let _ = writeln!(out, "\n{:<24}{header}", "attribute (true)");
        for name in &manifest.attributes {
            let cells: String = splits
                .iter()
                .map(|s| {
                    let stats = &manifest.splits[s];
                    let yes = stats.attributes.get(name).map_or(0, |c| c.yes);
                    let pct = 100.0 * yes as f64 / stats.rows.max(1) as f64;
                    format!("{:>16}", format!("{yes} ({pct:.1}%)"))
                })
                .collect();
            let _ = writeln!(out, "{name:<24}{cells}");
        }
    }
    out
}

/// The condition a preview groups by when none is given: the label column, else `Blond_Hair`,
/// else the first attribute.
pub fn default_condition(manifest: &Manifest) -> Option<Condition> {
    if !manifest.classes.is_empty() {
        Some(Condition::Label)
    } else if manifest.attribute_index("Blond_Hair").is_some() {
        Some(Condition::Attributes(vec!["Blond_Hair".into()]))
    } else {
        manifest
            .attributes
            .first()
            .map(|a| Condition::Attributes(vec![a.clone()]))
    }
}

/// A PNG grid with one row per class of `condition` and up to `per_class` real images in each.
pub async fn preview(dataset: &Dataset, condition: Condition, per_class: usize, seed: u64) -> Result<Vec<u8>> {
    let manifest = dataset.manifest();
    let classes = condition.resolve(manifest)?;
    let batch_size = (manifest.rows as usize).clamp(1, 64);
    let loader = dataset.loader(LoaderOptions {
        split: None,
        batch_size,
        seed,
        condition: Some(condition),
        ..LoaderOptions::default()
    })?;
    let image = &manifest.image;
    let mut grid = Grid::new(
        classes.len(),
        per_class,
        image.width,
        image.height,
        image.channels,
        Grid::scale_for(image.width, 64),
    );
    let mut filled = vec![0usize; classes.len()];
    let bytes = image.bytes();
    let mut stream = loader.epoch(0, 0);
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        for (i, &class) in batch.classes.iter().enumerate() {
            let class = class as usize;
            if filled[class] < per_class {
                grid.set(class, filled[class], &batch.pixels[i * bytes..(i + 1) * bytes]);
                filled[class] += 1;
            }
        }
        if filled.iter().all(|&n| n == per_class) {
            break;
        }
    }
    Ok(grid.with_row_labels(classes.names).to_png())
}
