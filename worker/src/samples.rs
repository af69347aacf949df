//! Pictures from a generator: the label-swap grid (one row per fixed latent vector, one column
//! per class) written during training, and `worker generate`.

use std::path::{Path, PathBuf};

use dataprep::grid::Grid;
use tch::{Device, Kind, Tensor};

use crate::Result;
use crate::checkpoint;
use crate::config::DeviceSpec;
use crate::gan::Gan;
use crate::pixels::to_u8_hwc;

/// `rows` latent vectors drawn on the CPU from `seed` alone (the same on every device).
pub fn fixed_latents(seed: u64, rows: i64, z_dim: i64) -> Tensor {
    tch::manual_seed(base::seed::mix(&[seed, base::seed::tag::SAMPLE_LATENTS]) as i64);
    Tensor::randn([rows, z_dim], (Kind::Float, Device::Cpu))
}

/// The label-swap grid as PNG: row r keeps latent r, column c asks for class c.
pub fn label_swap_grid(gan: &Gan, latents: &Tensor, class_names: &[String]) -> Vec<u8> {
    let rows = latents.size()[0];
    let classes = class_names.len() as i64;
    let spec = gan.spec;
    let size = spec.image_size as u32;
    let longest_label = class_names
        .iter()
        .map(|n| n.chars().count() as u32 * 8 + 4)
        .max()
        .unwrap_or(0);
    let mut grid = Grid::new(
        rows as usize,
        classes as usize,
        size,
        size,
        spec.channels as u32,
        Grid::scale_for(size, longest_label.max(96)),
    )
    .with_col_labels(class_names.to_vec());
    let image_bytes = (size * size) as usize * spec.channels as usize;
    for class in 0..classes {
        let labels = Tensor::full([rows], class, (Kind::Int64, Device::Cpu));
        let pixels = to_u8_hwc(&gan.generate(latents, &labels));
        for row in 0..rows as usize {
            grid.set(row, class as usize, &pixels[row * image_bytes..(row + 1) * image_bytes]);
        }
    }
    grid.to_png()
}

/// A class name usable as a folder name.
pub fn folder_for(class: &str) -> String {
    class
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_+.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// What [`generate`] wrote.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The checkpoint used.
    pub checkpoint: String,
    /// Its step.
    pub step: u64,
    /// Files written.
    pub files: Vec<PathBuf>,
}

/// Options of [`generate`].
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Checkpoint folder or job output URL.
    pub checkpoint: String,
    /// Images per class.
    pub count: i64,
    /// Output folder: `<out>/<class>/<i>.png`.
    pub out: PathBuf,
    /// Only this class (name or index); all classes when `None`.
    pub label: Option<String>,
    /// Seed of the latent vectors.
    pub seed: u64,
    /// Also write the label-swap grid here.
    pub grid: Option<PathBuf>,
    /// Device spec.
    pub device: DeviceSpec,
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| dataprep::Error::io(parent, e))?;
    }
    std::fs::write(path, bytes).map_err(|e| dataprep::Error::io(path, e).into())
}

/// Writes `count` images per requested class from a checkpoint, and optionally the grid.
pub async fn generate(options: &GenerateOptions) -> Result<Generated> {
    let (ckpt, gan) = checkpoint::open_generator(&options.checkpoint, options.device).await?;
    let names = &ckpt.state.classes;
    let wanted: Vec<usize> = match &options.label {
        None => (0..names.len()).collect(),
        Some(label) => {
            let index = names
                .iter()
                .position(|n| n == label)
                .or_else(|| label.parse::<usize>().ok().filter(|&i| i < names.len()))
                .ok_or_else(|| ckpt.error(format!("no class {label:?}; classes: {}", names.join(", "))))?;
            vec![index]
        }
    };
    let spec = gan.spec;
    let image_bytes = (spec.image_size * spec.image_size * spec.channels) as usize;
    let latents = {
        tch::manual_seed(options.seed as i64);
        Tensor::randn([options.count, spec.z_dim], (Kind::Float, Device::Cpu))
    };
    let mut files = Vec::new();
    for &class in &wanted {
        let labels = Tensor::full([options.count], class as i64, (Kind::Int64, Device::Cpu));
        let pixels = to_u8_hwc(&gan.generate(&latents, &labels));
        let dir = options.out.join(folder_for(&names[class]));
        for i in 0..options.count as usize {
            let png = dataprep::imaging::encode_png(
                &pixels[i * image_bytes..(i + 1) * image_bytes],
                spec.image_size as u32,
                spec.image_size as u32,
                spec.channels as u32,
            )
            .map_err(|source| dataprep::Error::Image {
                path: dir.display().to_string(),
                source,
            })?;
            let path = dir.join(format!("{i}.png"));
            write_file(&path, &png)?;
            files.push(path);
        }
    }
    if let Some(path) = &options.grid {
        let rows = latents.narrow(0, 0, options.count.min(8));
        write_file(path, &label_swap_grid(&gan, &rows, names))?;
        files.push(path.clone());
    }
    Ok(Generated {
        checkpoint: ckpt.url,
        step: ckpt.state.step,
        files,
    })
}
