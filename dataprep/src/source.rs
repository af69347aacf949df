//! What a pack reads: a list of samples (an image plus its labels) found by one of the input
//! scanners ([`crate::celeba`], [`crate::fashion_mnist`], [`crate::folder`]).

use std::path::{Path, PathBuf};

use fast_image_resize::Resizer;
use image::{DynamicImage, GrayImage, RgbImage};

use crate::imaging::{self, Recipe};
use crate::manifest::{Skipped, Split};

/// Where a sample's pixels come from.
#[derive(Debug, Clone)]
pub enum Input {
    /// An image file (JPEG or PNG).
    File(PathBuf),
    /// Pixels already in memory (records of an IDX file), HWC u8.
    Pixels {
        /// Columns.
        width: u32,
        /// Rows.
        height: u32,
        /// 1 or 3.
        channels: u32,
        /// The pixels.
        data: Vec<u8>,
    },
}

impl Input {
    /// Loads, decodes and transforms the input; the error says why the input is unusable.
    pub fn load(&self, recipe: &Recipe, resizer: &mut Resizer) -> Result<Vec<u8>, String> {
        let image = match self {
            Input::File(path) => {
                let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
                if bytes.is_empty() {
                    return Err("empty file".into());
                }
                imaging::decode(&bytes)?
            }
            Input::Pixels {
                width,
                height,
                channels,
                data,
            } => {
                let bad = || "pixel buffer does not match its shape".to_string();
                match channels {
                    1 => DynamicImage::ImageLuma8(GrayImage::from_raw(*width, *height, data.clone()).ok_or_else(bad)?),
                    _ => DynamicImage::ImageRgb8(RgbImage::from_raw(*width, *height, data.clone()).ok_or_else(bad)?),
                }
            }
        };
        recipe.apply(image, resizer)
    }
}

/// One image with its labels.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Stable name (the source file name, or `file#index` inside a file).
    pub id: String,
    /// The partition it belongs to.
    pub split: Split,
    /// Class index into [`Source::classes`], when the source has classes.
    pub label: Option<u32>,
    /// One value per [`Source::attributes`] entry.
    pub attributes: Vec<bool>,
    /// The pixels.
    pub input: Input,
}

/// A scanned input dataset, ready to pack.
#[derive(Debug, Clone)]
pub struct Source {
    /// `celeba`, `fashion-mnist` or `folder`.
    pub kind: &'static str,
    /// Layout variant, where the source has several.
    pub dialect: Option<String>,
    /// The input folder.
    pub input: PathBuf,
    /// Names of the binary attributes, in order.
    pub attributes: Vec<String>,
    /// Names of the classes of the `label` column (empty: no `label` column).
    pub classes: Vec<String>,
    /// The samples, in source order.
    pub samples: Vec<Sample>,
    /// Inputs found unusable while scanning (before any decoding).
    pub skipped: Vec<Skipped>,
}

/// Lists the entries of a folder, naming the folder when it cannot be read.
pub(crate) fn read_dir_sorted(dir: &Path) -> crate::Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| crate::Error::io(dir, e))?;
    let mut paths = Vec::new();
    for entry in entries {
        paths.push(entry.map_err(|e| crate::Error::io(dir, e))?.path());
    }
    paths.sort();
    Ok(paths)
}

/// True for the file extensions the packer decodes.
pub(crate) fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
}
