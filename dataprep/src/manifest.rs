//! `manifest.json`: what a packed dataset holds. Written last by a pack, so a dataset without it
//! does not exist.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::imaging::Recipe;
use crate::{Error, Result};

/// File name of the manifest inside a dataset prefix.
pub const MANIFEST: &str = "manifest.json";
/// Format identifier written into every manifest.
pub const FORMAT: &str = "gantry-dataset";
/// Current schema version of the manifest and shards.
pub const SCHEMA_VERSION: u32 = 1;
/// How many skipped inputs are listed by name (all are counted).
pub const MAX_LISTED_SKIPS: usize = 1000;

/// The three partitions of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Training images.
    Train,
    /// Validation images.
    Valid,
    /// Test images.
    Test,
}

impl Split {
    /// Every split, in order.
    pub const ALL: [Split; 3] = [Split::Train, Split::Valid, Split::Test];

    /// The lowercase name stored in shards and manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Valid => "valid",
            Split::Test => "test",
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Split {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "train" => Ok(Split::Train),
            "valid" | "val" | "validation" => Ok(Split::Valid),
            "test" => Ok(Split::Test),
            _ => Err(Error::Options(format!("unknown split {s:?} (train, valid or test)"))),
        }
    }
}

/// How pixels are stored in the `image` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Raw `height x width x channels` u8 bytes (HWC): the loader's work is a copy.
    Raw,
    /// One PNG per row: smaller, costs a decode when read.
    Png,
}

/// Shape and storage of the images.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageInfo {
    /// Rows of pixels.
    pub height: u32,
    /// Columns of pixels.
    pub width: u32,
    /// 1 (grayscale) or 3 (RGB).
    pub channels: u32,
    /// Storage of the `image` column.
    pub encoding: Encoding,
}

impl ImageInfo {
    /// Bytes of one decoded image.
    pub fn bytes(&self) -> usize {
        (self.height * self.width * self.channels) as usize
    }
}

/// Where the dataset came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceInfo {
    /// `celeba`, `fashion-mnist` or `folder`.
    pub kind: String,
    /// Input layout variant, where the source has several (CelebA: `official` or `kaggle`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dialect: Option<String>,
    /// The input folder as given.
    pub input: String,
}

/// One Parquet shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardInfo {
    /// File name inside the dataset prefix (`shard-00000.parquet`).
    pub file: String,
    /// The split every row of this shard belongs to.
    pub split: Split,
    /// Rows in the shard.
    pub rows: u64,
    /// Rows of each row group, in order.
    pub row_groups: Vec<u64>,
    /// Size of the file in bytes.
    pub bytes: u64,
    /// SHA-256 of the file, lowercase hex.
    pub sha256: String,
}

/// Count of rows where a binary attribute is false and true.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinaryCount {
    /// Rows with the attribute false (CelebA -1).
    #[serde(rename = "false")]
    pub no: u64,
    /// Rows with the attribute true (CelebA 1).
    #[serde(rename = "true")]
    pub yes: u64,
}

/// An input that was not packed, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Skipped {
    /// The input's name (file name, or `file:index` for records inside a file).
    pub id: String,
    /// Why it was skipped.
    pub reason: String,
}

/// Per-split statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitStats {
    /// Rows in the split.
    pub rows: u64,
    /// Rows per class of the `label` column (indexed like [`Manifest::classes`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<u64>,
    /// False/true counts per attribute (keyed by attribute name).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, BinaryCount>,
}

/// The content of `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// Schema version of the manifest and shards ([`SCHEMA_VERSION`]).
    pub version: u32,
    /// The tool that wrote it.
    pub created_by: String,
    /// Where the images came from.
    pub source: SourceInfo,
    /// Image shape and storage.
    pub image: ImageInfo,
    /// How source images were cropped and resized.
    pub recipe: Recipe,
    /// Names of the boolean attribute columns, in column order.
    pub attributes: Vec<String>,
    /// Names of the classes of the `label` column; empty when the dataset has no `label` column.
    pub classes: Vec<String>,
    /// Total rows.
    pub rows: u64,
    /// Statistics of each split present.
    pub splits: BTreeMap<Split, SplitStats>,
    /// The shards, in order.
    pub shards: Vec<ShardInfo>,
    /// How many inputs were skipped.
    pub skipped_count: u64,
    /// The first [`MAX_LISTED_SKIPS`] skipped inputs with reasons.
    pub skipped: Vec<Skipped>,
}

impl Manifest {
    /// Parses and checks a manifest read from `url`.
    pub fn from_json(bytes: &[u8], url: &str) -> Result<Self> {
        let bad = |message: String| Error::Manifest {
            url: url.to_string(),
            message,
            source: None,
        };
        let manifest: Manifest = serde_json::from_slice(bytes).map_err(|e| Error::Manifest {
            url: url.to_string(),
            message: "not the JSON of a manifest".into(),
            source: Some(e),
        })?;
        if manifest.format != FORMAT {
            return Err(bad(format!("format is {:?}, expected {FORMAT:?}", manifest.format)));
        }
        if manifest.version != SCHEMA_VERSION {
            return Err(bad(format!(
                "schema version {} is not supported (this build reads version {SCHEMA_VERSION})",
                manifest.version
            )));
        }
        let ImageInfo {
            height,
            width,
            channels,
            ..
        } = manifest.image;
        let fits = height
            .checked_mul(width)
            .and_then(|p| p.checked_mul(channels))
            .is_some();
        if height == 0 || width == 0 || !matches!(channels, 1 | 3) || !fits {
            return Err(bad(format!(
                "image shape {height}x{width}x{channels} is impossible (height and width from 1, 1 or 3 channels, under 4 GiB)"
            )));
        }
        let shard_rows: u64 = manifest.shards.iter().map(|s| s.rows).sum();
        if shard_rows != manifest.rows {
            return Err(bad(format!(
                "shards hold {shard_rows} rows, manifest says {}",
                manifest.rows
            )));
        }
        for shard in &manifest.shards {
            if shard.row_groups.iter().sum::<u64>() != shard.rows {
                return Err(bad(format!(
                    "{}: row groups do not add up to {} rows",
                    shard.file, shard.rows
                )));
            }
        }
        Ok(manifest)
    }

    /// Index of the attribute column `name`.
    pub fn attribute_index(&self, name: &str) -> Option<usize> {
        self.attributes.iter().position(|a| a == name)
    }

    /// Rows in `split` (0 when absent).
    pub fn split_rows(&self, split: Split) -> u64 {
        self.splits.get(&split).map_or(0, |s| s.rows)
    }
}
