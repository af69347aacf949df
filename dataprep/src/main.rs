//! `dataprep`: pack labelled image datasets into Parquet shards, inspect them, make synthetic
//! CelebA folders, and measure the data path.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use base::Location;
use clap::{Parser, Subcommand};
#[cfg(feature = "synth")]
use dataprep::celeba::Dialect;
use dataprep::imaging::{Crop, Recipe};
use dataprep::manifest::Encoding;
use dataprep::pack::{PackOptions, PackSummary};
use dataprep::{Condition, Dataset};

/// Pack labelled image datasets into Parquet shards in object storage, and inspect them.
#[derive(Debug, Parser)]
#[command(name = "dataprep", version, about)]
struct Cli {
    /// Log format: `human` on a terminal, `json` for clusters.
    #[arg(long, global = true, value_enum, default_value_t = base::logging::LogFormat::Human)]
    log_format: base::logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a synthetic dataset in a real dataset's on-disk layout.
    #[cfg(feature = "synth")]
    Synth {
        #[command(subcommand)]
        kind: SynthKind,
    },
    /// Pack an input folder into shards + manifest.json at a storage URL.
    Pack {
        #[command(subcommand)]
        kind: PackKind,
    },
    /// Summarise a packed dataset and optionally render a preview grid.
    Inspect {
        /// Dataset URL (path, file://, memory://, s3://, gs://, az://).
        url: String,
        /// Write a PNG grid of real images, one row per class, to this file.
        #[arg(long)]
        preview: Option<PathBuf>,
        /// Group the preview by this condition: `label`, an attribute, or attributes joined by `,`.
        #[arg(long)]
        by: Option<String>,
        /// Images per class in the preview.
        #[arg(long, default_value_t = 8)]
        per_class: usize,
        /// Print the manifest as JSON instead of the summary.
        #[arg(long)]
        json: bool,
    },
    /// Measure packing and reading throughput on synthetic images.
    #[cfg(feature = "synth")]
    Bench {
        /// Images to synthesise and pack.
        #[arg(long, default_value_t = 2000)]
        count: usize,
        /// Training resolution.
        #[arg(long, default_value_t = 64)]
        size: u32,
        /// Reader batch size.
        #[arg(long, default_value_t = 128)]
        batch: usize,
        /// Seconds of reading to time.
        #[arg(long, default_value_t = 5.0)]
        read_seconds: f64,
    },
}

#[cfg(feature = "synth")]
#[derive(Debug, Subcommand)]
enum SynthKind {
    /// Synthetic faces at 178x218 with CelebA's 40 attributes; Blond_Hair is visible as hair colour.
    Celeba {
        /// Folder to write (created).
        #[arg(long)]
        output: PathBuf,
        /// Number of images.
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// Seed; the same seed writes the same bytes.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Annotation layout: `official` (.txt) or `kaggle` (.csv, images one folder deeper).
        #[arg(long, value_enum, default_value_t = Dialect::Official)]
        dialect: Dialect,
    },
}

/// Options shared by every `pack` input.
#[derive(Debug, clap::Args)]
struct PackArgs {
    /// Input folder.
    #[arg(long)]
    input: PathBuf,
    /// Output URL (path, file://, memory://, s3://bucket/prefix, gs://, az://).
    #[arg(long)]
    output: String,
    /// Target shard size in MiB.
    #[arg(long, default_value_t = 64.0)]
    shard_mb: f64,
    /// Rows per Parquet row group.
    #[arg(long, default_value_t = 512)]
    row_group: usize,
    /// Pixel storage: `raw` HWC bytes (fast to read) or `png` (smaller).
    #[arg(long, value_enum, default_value_t = Encoding::Raw)]
    encoding: Encoding,
    /// Write even into a prefix holding files of something else (they are left beside the
    /// dataset); without it, only an empty prefix or a previous gantry dataset is written to.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Subcommand)]
enum PackKind {
    /// CelebA in the official (.txt) or Kaggle (.csv) layout, detected automatically.
    Celeba {
        #[command(flatten)]
        common: PackArgs,
        /// Training resolution (square).
        #[arg(long, default_value_t = 64)]
        size: u32,
        /// Crop before resizing: `center` (square), `none` (squash), or `box:X,Y,WIDTH,HEIGHT`.
        #[arg(long, default_value = "center")]
        crop: Crop,
    },
    /// Fashion-MNIST's four IDX files (gzipped or not): 28x28 padded to 32x32, 10 classes.
    FashionMnist {
        #[command(flatten)]
        common: PackArgs,
    },
    /// One sub-folder per class of JPEG/PNG images.
    Folder {
        #[command(flatten)]
        common: PackArgs,
        /// Training resolution (square).
        #[arg(long)]
        size: u32,
        /// Store one grayscale channel instead of RGB.
        #[arg(long)]
        grayscale: bool,
        /// Crop before resizing: `center` (square), `none` (squash), or `box:X,Y,WIDTH,HEIGHT`.
        #[arg(long, default_value = "center")]
        crop: Crop,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    base::logging::init(cli.log_format);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", base::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn print_pack_summary(summary: &PackSummary, url: &str) {
    let m = &summary.manifest;
    let splits: Vec<String> = m
        .splits
        .iter()
        .map(|(s, stats)| format!("{s} {}", stats.rows))
        .collect();
    println!(
        "packed {} images into {} shards at {url} ({}) in {:.1}s, {:.0} images/s; skipped {}",
        m.rows,
        m.shards.len(),
        splits.join(", "),
        summary.seconds,
        summary.images_per_sec,
        m.skipped_count
    );
    for skip in m.skipped.iter().take(20) {
        println!("  skipped {}: {}", skip.id, skip.reason);
    }
    if m.skipped_count > 20 {
        println!(
            "  ... {} more skipped inputs are listed in manifest.json",
            m.skipped_count - 20
        );
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        #[cfg(feature = "synth")]
        Command::Synth {
            kind:
                SynthKind::Celeba {
                    output,
                    count,
                    seed,
                    dialect,
                },
        } => {
            let options = dataprep::synth::SynthOptions { count, seed, dialect };
            let summary = tokio::task::spawn_blocking(move || {
                dataprep::synth::synth_celeba(&output, &options).map(|s| (s, output))
            })
            .await??;
            let (s, output) = summary;
            println!(
                "wrote {} synthetic CelebA images to {} (train {}, valid {}, test {}; Blond_Hair {})",
                s.images,
                output.display(),
                s.train,
                s.valid,
                s.test,
                s.blond
            );
        }
        Command::Pack { kind } => {
            let (common, source, recipe) = match kind {
                PackKind::Celeba { common, size, crop } => {
                    let source = dataprep::celeba::scan(&common.input)?;
                    (common, source, Recipe::square(crop, size, 3))
                }
                PackKind::FashionMnist { common } => {
                    let source = dataprep::fashion_mnist::scan(&common.input)?;
                    let recipe = Recipe {
                        pad: 2,
                        ..Recipe::square(Crop::None, 28, 1)
                    };
                    (common, source, recipe)
                }
                PackKind::Folder {
                    common,
                    size,
                    grayscale,
                    crop,
                } => {
                    let source = dataprep::folder::scan(&common.input)?;
                    (
                        common,
                        source,
                        Recipe::square(crop, size, if grayscale { 1 } else { 3 }),
                    )
                }
            };
            let output = Location::parse(&common.output)?;
            let options = PackOptions {
                shard_mb: common.shard_mb,
                row_group: common.row_group,
                encoding: common.encoding,
                progress: std::io::stderr().is_terminal(),
                force: common.force,
            };
            let summary = tokio::select! {
                summary = dataprep::pack::pack(source, recipe, &output, &options) => summary?,
                _ = tokio::signal::ctrl_c() => {
                    anyhow::bail!("interrupted: {} has no manifest.json, so no dataset is there; run the pack again", output.url())
                }
            };
            print_pack_summary(&summary, output.url());
        }
        Command::Inspect {
            url,
            preview,
            by,
            per_class,
            json,
        } => {
            let dataset = Dataset::open(&url).await?;
            let manifest = dataset.manifest();
            if json {
                println!("{}", serde_json::to_string_pretty(manifest)?);
            } else {
                print!("{}", dataprep::inspect::summary(manifest, dataset.location().url()));
            }
            if let Some(path) = preview {
                let condition = match by {
                    Some(by) => by.parse::<Condition>()?,
                    None => dataprep::inspect::default_condition(manifest)
                        .context("the dataset has neither classes nor attributes to group a preview by")?,
                };
                let png = dataprep::inspect::preview(&dataset, condition, per_class, 0).await?;
                std::fs::write(&path, png).with_context(|| format!("writing {}", path.display()))?;
                println!("preview written to {}", path.display());
            }
        }
        #[cfg(feature = "synth")]
        Command::Bench {
            count,
            size,
            batch,
            read_seconds,
        } => {
            let options = dataprep::bench::BenchOptions {
                count,
                size,
                batch,
                read_seconds,
                dir: None,
            };
            println!("{}", dataprep::bench::run(&options).await?);
        }
    }
    Ok(())
}
