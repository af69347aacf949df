//! Fashion-MNIST: the four IDX files (gzipped or not), 28x28 grayscale, 10 classes.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::manifest::Split;
use crate::source::{Input, Sample, Source};
use crate::{Error, Result};

/// The ten class names, in label order.
pub const CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;

/// Finds `stem` or `stem.gz` in `input`.
fn find(input: &Path, stem: &str) -> Result<PathBuf> {
    [input.join(stem), input.join(format!("{stem}.gz"))]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| Error::Input {
            path: input.to_path_buf(),
            message: format!("{stem} (or {stem}.gz) is missing"),
        })
}

fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| Error::Malformed {
                path: path.to_path_buf(),
                line: None,
                message: "corrupt gzip data".into(),
                source: Some(e.into()),
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses an IDX file: checks the magic number and that the payload holds exactly the declared
/// dimensions; returns (dimensions, payload).
pub fn parse_idx(path: &Path, magic: u32) -> Result<(Vec<usize>, Vec<u8>)> {
    let data = read_maybe_gz(path)?;
    let bad = |message: String| Error::malformed(path, None, message);
    let header = |i: usize| -> Result<u32> {
        data.get(4 * i..4 * i + 4)
            .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
            .ok_or_else(|| bad("truncated IDX header".into()))
    };
    let found = header(0)?;
    if found != magic {
        return Err(bad(format!(
            "IDX magic number is {found:#010x}, expected {magic:#010x}"
        )));
    }
    let ndim = (magic & 0xff) as usize;
    let dims = (1..=ndim)
        .map(|i| header(i).map(|d| d as usize))
        .collect::<Result<Vec<_>>>()?;
    let offset = 4 * (ndim + 1);
    let expected: usize = dims.iter().product();
    let payload = data.len() - offset.min(data.len());
    if payload != expected {
        return Err(bad(format!(
            "IDX dimensions {dims:?} need {expected} bytes of data, the file has {payload} (truncated?)"
        )));
    }
    Ok((dims, data[offset..].to_vec()))
}

/// Scans a folder with `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
/// `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte` (each optionally `.gz`).
pub fn scan(input: &Path) -> Result<Source> {
    std::fs::read_dir(input).map_err(|e| Error::io(input, e))?;
    let mut samples = Vec::new();
    for (prefix, split) in [("train", Split::Train), ("t10k", Split::Test)] {
        let images_path = find(input, &format!("{prefix}-images-idx3-ubyte"))?;
        let labels_path = find(input, &format!("{prefix}-labels-idx1-ubyte"))?;
        let (dims, pixels) = parse_idx(&images_path, IMAGES_MAGIC)?;
        let (label_dims, labels) = parse_idx(&labels_path, LABELS_MAGIC)?;
        let (count, height, width) = (dims[0], dims[1], dims[2]);
        if label_dims[0] != count {
            return Err(Error::malformed(
                &labels_path,
                None,
                format!(
                    "{} labels for {count} images in {}",
                    label_dims[0],
                    images_path.display()
                ),
            ));
        }
        let name = images_path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        for (i, (image, &label)) in pixels.chunks_exact(height * width).zip(&labels).enumerate() {
            if label as usize >= CLASSES.len() {
                return Err(Error::malformed(
                    &labels_path,
                    None,
                    format!("record {i}: label {label} is not a class index 0..9"),
                ));
            }
            samples.push(Sample {
                id: format!("{name}#{i}"),
                split,
                label: Some(u32::from(label)),
                attributes: Vec::new(),
                input: Input::Pixels {
                    width: width as u32,
                    height: height as u32,
                    channels: 1,
                    data: image.to_vec(),
                },
            });
        }
    }
    Ok(Source {
        kind: "fashion-mnist",
        dialect: None,
        input: input.to_path_buf(),
        attributes: Vec::new(),
        classes: CLASSES.iter().map(|c| c.to_string()).collect(),
        samples,
        skipped: Vec::new(),
    })
}
