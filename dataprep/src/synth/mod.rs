//! A synthetic stand-in for CelebA, written in CelebA's real on-disk layout (either dialect), for
//! tests and demos where the real dataset cannot be downloaded. Every image is a 178x218 JPEG of
//! a simple drawn face (background gradient, hair, skin-tone face, eyes, brows, nose, mouth, and
//! optionally a hat, glasses or a beard) whose pose varies by a few pixels; its 40 attributes are
//! drawn at random and the visible ones (hair colour, `Smiling`, `Eyeglasses`, `Pale_Skin`,
//! `Wearing_Hat`, beards, `Bangs`...) match the drawing. `Blond_Hair` is the attribute built to
//! be learnt: blond hair is light yellow, all other hair is dark or grey, and the mean colour of
//! [`hair_probe_box`] tells the two apart on every image.
//!
//! Everything about image `i` is a function of `(seed, i)` alone (its own ChaCha stream), so the
//! images are rendered in parallel and the output is identical whatever the thread count.
//!
//! - `face`: draws an image's attributes and the face parameters they imply (colours, pose,
//!   hairline, beard...).
//! - `geometry`: where the parts of a face are, for a given pose.
//! - `render`: rasterises a face onto a 178x218 canvas.
//! - `annotations`: the split sizes and the annotation files, committed after every image.

mod annotations;
mod face;
mod geometry;
mod render;

use std::fs;
use std::path::Path;

use image::codecs::jpeg::JpegEncoder;
use rayon::prelude::*;

use crate::celeba::Dialect;
use crate::{Error, Result};

use annotations::{Annotations, image_name, split_sizes};
use face::{Face, attr};

/// Options for [`synth_celeba`].
#[derive(Debug, Clone)]
pub struct SynthOptions {
    /// How many images to write.
    pub count: usize,
    /// Seed of everything random: the output is a function of the options alone.
    pub seed: u64,
    /// Which of CelebA's two layouts to write.
    pub dialect: Dialect,
}

/// What [`synth_celeba`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthSummary {
    /// Images written.
    pub images: usize,
    /// Images in partition 0 (train).
    pub train: usize,
    /// Images in partition 1 (valid).
    pub valid: usize,
    /// Images in partition 2 (test).
    pub test: usize,
    /// Images with `Blond_Hair` = 1.
    pub blond: usize,
}

/// Images rendered (and held) per parallel batch.
const CHUNK: usize = 1024;
const JPEG_QUALITY: u8 = 90;

/// Writes `count` synthetic 178x218 face-like JPEGs and CelebA's annotation files under `output`
/// (created if missing).
///
/// Official dialect: `img_align_celeba/000001.jpg`..., `list_attr_celeba.txt` and
/// `list_eval_partition.txt`. Kaggle dialect: `img_align_celeba/img_align_celeba/000001.jpg`...,
/// `list_attr_celeba.csv` and `list_eval_partition.csv`. Images are numbered from 1 and split in
/// order like real CelebA: the first 162770/202599 train, the next 19867/202599 valid, the rest
/// test (rounded; with 3 or more images every split has at least one).
///
/// Commit protocol: the dialect's annotation files left by an earlier run are removed first,
/// every image is written, then the partition file and last the attribute file, each under a
/// temporary name renamed into place. A run that fails or is interrupted therefore leaves no
/// attribute file, so the folder is not taken for a CelebA folder, and an attribute file only
/// ever lists images that exist.
///
/// Blond balance: the images are taken in blocks of five consecutive indices (0-based 0..5,
/// 5..10, ...) and exactly one image of each block is blond: the first image of the first block,
/// and a position drawn from `(seed, block)` in every other block. So 20% of the images are blond
/// (one in every complete block) and any `count >= 2` has both blond and non-blond images.
pub fn synth_celeba(output: &Path, options: &SynthOptions) -> Result<SynthSummary> {
    let count = options.count;
    let images = match options.dialect {
        Dialect::Official => output.join("img_align_celeba"),
        Dialect::Kaggle => output.join("img_align_celeba").join("img_align_celeba"),
    };
    fs::create_dir_all(&images).map_err(|e| Error::io(&images, e))?;
    let (train, valid, test) = split_sizes(count);
    Annotations::uncommit(output, options.dialect)?;
    let mut notes = Annotations::new(options.dialect, count);
    let mut blond = 0;
    let mut start = 0;
    while start < count {
        let end = count.min(start + CHUNK);
        let attrs = (start..end)
            .into_par_iter()
            .map(|index| write_image(&images, options.seed, index))
            .collect::<Result<Vec<_>>>()?;
        for (index, attrs) in (start..end).zip(&attrs) {
            let partition = if index < train {
                0
            } else if index < train + valid {
                1
            } else {
                2
            };
            blond += usize::from(attrs[attr!("Blond_Hair")]);
            notes.row(&image_name(index), attrs, partition);
        }
        start = end;
    }
    notes.commit(output)?;
    Ok(SynthSummary {
        images: count,
        train,
        valid,
        test,
        blond,
    })
}

/// The hair region of an aligned synthetic image as (x0, y0, x1, y1) in 178x218 pixel
/// coordinates: a box that lies inside the hair for every pose the generator draws, used by tests
/// to classify blond vs not blond by mean colour.
///
/// `x0..x1` and `y0..y1` are half-open pixel ranges: the box is the top of the head between the
/// lowest edge of any hat and the highest forehead hairline, nothing but hair in every image.
/// Its mean colour is blond when `(R + G) / 2 - B` is well above zero and the brightness
/// `(R + G + B) / 3` is high (blond hair is about (225, 195, 110), other hair is dark or grey):
/// "blond iff `(R + G) / 2 - B > 32` and `(R + G + B) / 3 > 115`" is right on every image (over
/// 4500 decoded JPEGs, blond boxes had yellowness >= 57 and brightness >= 145; the other boxes
/// had yellowness <= 8 where their brightness was over 115, and brightness <= 85 otherwise).
pub fn hair_probe_box() -> (u32, u32, u32, u32) {
    geometry::PROBE_BOX
}

/// Renders image `index` and writes it to `dir`; returns its attributes.
fn write_image(dir: &Path, seed: u64, index: usize) -> Result<[bool; 40]> {
    let (face, mut rng) = Face::sample(seed, index);
    let image = render::render(&face, &mut rng);
    let path = dir.join(image_name(index));
    let mut bytes = Vec::with_capacity(16 << 10);
    JpegEncoder::new_with_quality(&mut bytes, JPEG_QUALITY)
        .encode_image(&image)
        .map_err(|source| Error::Image {
            path: path.display().to_string(),
            source,
        })?;
    fs::write(&path, bytes).map_err(|e| Error::io(&path, e))?;
    Ok(face.attrs)
}

#[cfg(test)]
mod tests {
    use super::face::BLOND_BLOCK;
    use super::*;
    use crate::celeba::{ATTRIBUTES, HEIGHT, WIDTH};

    fn synth(dir: &Path, count: usize, seed: u64, dialect: Dialect) -> SynthSummary {
        synth_celeba(dir, &SynthOptions { count, seed, dialect }).unwrap()
    }

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap()
    }

    #[test]
    fn official_layout_matches_celeba() {
        let dir = tempfile::tempdir().unwrap();
        let summary = synth(dir.path(), 24, 7, Dialect::Official);
        assert_eq!(summary.images, 24);

        let attrs = read(&dir.path().join("list_attr_celeba.txt"));
        assert!(attrs.ends_with('\n') && !attrs.contains('\r'));
        let lines: Vec<&str> = attrs.lines().collect();
        assert_eq!(lines.len(), 2 + 24);
        assert_eq!(lines[0], "24");
        assert_eq!(lines[1], format!("{} ", ATTRIBUTES.join(" ")));
        for (i, line) in lines[2..].iter().enumerate() {
            let name = format!("{:06}.jpg", i + 1);
            assert!(line.starts_with(&name), "{line}");
            let values = &line[name.len()..];
            assert_eq!(values.len(), 3 * 40, "{line}");
            for value in values.as_bytes().chunks(3) {
                assert!(value == b" -1" || value == b"  1", "{line}");
            }
        }
        assert!(lines[2].starts_with("000001.jpg "));

        let partition = read(&dir.path().join("list_eval_partition.txt"));
        let lines: Vec<&str> = partition.lines().collect();
        assert_eq!(lines.len(), 24);
        assert_eq!(lines[0], "000001.jpg 0");
        assert_eq!(lines[23], "000024.jpg 2");

        let images = dir.path().join("img_align_celeba");
        assert_eq!(fs::read_dir(&images).unwrap().count(), 24);
        for name in ["000001.jpg", "000024.jpg"] {
            assert_eq!(image::image_dimensions(images.join(name)).unwrap(), (WIDTH, HEIGHT));
        }
        let image = image::open(images.join("000001.jpg")).unwrap();
        assert_eq!(image.color(), image::ColorType::Rgb8);
    }

    #[test]
    fn kaggle_layout_matches_celeba() {
        let dir = tempfile::tempdir().unwrap();
        synth(dir.path(), 25, 7, Dialect::Kaggle);

        let attrs = read(&dir.path().join("list_attr_celeba.csv"));
        let lines: Vec<&str> = attrs.lines().collect();
        assert_eq!(lines.len(), 1 + 25);
        assert_eq!(lines[0], format!("image_id,{}", ATTRIBUTES.join(",")));
        assert!(lines[0].starts_with("image_id,5_o_Clock_Shadow,Arched_Eyebrows,"));
        for (i, line) in lines[1..].iter().enumerate() {
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(fields.len(), 41);
            assert_eq!(fields[0], format!("{:06}.jpg", i + 1));
            assert!(fields[1..].iter().all(|v| *v == "1" || *v == "-1"), "{line}");
        }

        let partition = read(&dir.path().join("list_eval_partition.csv"));
        let lines: Vec<&str> = partition.lines().collect();
        assert_eq!(lines.len(), 1 + 25);
        assert_eq!(lines[0], "image_id,partition");
        assert_eq!(lines[1], "000001.jpg,0");
        assert_eq!(lines[25], "000025.jpg,2");

        let images = dir.path().join("img_align_celeba").join("img_align_celeba");
        assert_eq!(fs::read_dir(&images).unwrap().count(), 25);
        assert_eq!(
            image::image_dimensions(images.join("000025.jpg")).unwrap(),
            (WIDTH, HEIGHT)
        );
        assert!(!dir.path().join("list_attr_celeba.txt").exists());
    }

    #[test]
    fn output_depends_on_the_seed_only() {
        let files = [
            "img_align_celeba/000003.jpg",
            "list_attr_celeba.txt",
            "list_eval_partition.txt",
        ];
        let run = |seed: u64, threads: usize| {
            let dir = tempfile::tempdir().unwrap();
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| synth(dir.path(), 12, seed, Dialect::Official));
            files.map(|f| fs::read(dir.path().join(f)).unwrap())
        };
        let a = run(5, 1);
        let b = run(5, 3);
        assert_eq!(a, b, "same seed, different thread counts");
        let c = run(6, 2);
        assert_ne!(a[0], c[0], "different seed, same image");
        assert_ne!(a[1], c[1], "different seed, same attributes");
        assert_eq!(a[2], c[2], "the partition depends on the count only");
    }

    #[test]
    fn partition_file_matches_the_summary() {
        let dir = tempfile::tempdir().unwrap();
        let summary = synth(dir.path(), 24, 1, Dialect::Official);
        assert_eq!(summary.train + summary.valid + summary.test, 24);
        assert!(summary.train > 0 && summary.valid > 0 && summary.test > 0);
        let partition = read(&dir.path().join("list_eval_partition.txt"));
        let count = |p: &str| partition.lines().filter(|l| l.ends_with(p)).count();
        assert_eq!(
            (count(" 0"), count(" 1"), count(" 2")),
            (summary.train, summary.valid, summary.test)
        );
    }

    #[test]
    fn a_failed_run_leaves_no_annotation_files_and_a_rerun_lists_only_images_present() {
        let dir = tempfile::tempdir().unwrap();
        synth(dir.path(), 12, 7, Dialect::Official); // a complete earlier run
        let images = dir.path().join("img_align_celeba");
        // Image 17 cannot be written (a folder has its name): the next run stops midway.
        fs::create_dir(images.join("000017.jpg")).unwrap();
        let options = SynthOptions {
            count: 20,
            seed: 7,
            dialect: Dialect::Official,
        };
        let error = synth_celeba(dir.path(), &options).unwrap_err().to_string();
        assert!(error.contains("000017.jpg"), "{error}");
        for name in ["list_attr_celeba.txt", "list_eval_partition.txt"] {
            assert!(!dir.path().join(name).exists(), "{name} outlived a failed run");
        }
        assert!(crate::celeba::scan(dir.path()).is_err(), "not a CelebA folder any more");

        fs::remove_dir(images.join("000017.jpg")).unwrap();
        synth_celeba(dir.path(), &options).unwrap();
        let source = crate::celeba::scan(dir.path()).unwrap();
        assert_eq!(source.samples.len(), 20);
        assert!(source.skipped.is_empty(), "{:?}", source.skipped);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            names.iter().all(|n| !n.to_string_lossy().ends_with(".partial")),
            "{names:?}"
        );
    }

    /// (mean R, mean G, mean B) of the hair probe box.
    fn probe_mean(image: &image::RgbImage) -> [f64; 3] {
        let (x0, y0, x1, y1) = hair_probe_box();
        let mut sum = [0.0; 3];
        for y in y0..y1 {
            for x in x0..x1 {
                let p = image.get_pixel(x, y).0;
                for (s, v) in sum.iter_mut().zip(p) {
                    *s += f64::from(v);
                }
            }
        }
        sum.map(|s| s / f64::from((x1 - x0) * (y1 - y0)))
    }

    #[test]
    fn hair_probe_box_separates_blond_perfectly() {
        const COUNT: usize = 200;
        let dir = tempfile::tempdir().unwrap();
        let summary = synth(dir.path(), COUNT, 11, Dialect::Official);
        assert_eq!(summary.blond, COUNT / BLOND_BLOCK);

        let attrs = read(&dir.path().join("list_attr_celeba.txt"));
        let blond_column = attr!("Blond_Hair");
        let mut correct = 0;
        // (min over blond, max over the others) of yellowness and brightness, for the message.
        let mut yellow = (f64::MAX, f64::MIN);
        let mut bright = (f64::MAX, f64::MIN);
        for line in attrs.lines().skip(2) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let blond = fields[1 + blond_column] == "1";
            let path = dir.path().join("img_align_celeba").join(fields[0]);
            let [r, g, b] = probe_mean(&image::open(path).unwrap().to_rgb8());
            let (y, l) = ((r + g) / 2.0 - b, (r + g + b) / 3.0);
            if blond {
                yellow.0 = yellow.0.min(y);
                bright.0 = bright.0.min(l);
            } else {
                yellow.1 = yellow.1.max(y);
                bright.1 = bright.1.max(l);
            }
            correct += usize::from((y > 32.0 && l > 115.0) == blond);
        }
        assert_eq!(
            correct, COUNT,
            "yellowness (min blond, max other) {yellow:?}, brightness {bright:?}"
        );
        println!("yellowness (min blond, max other) {yellow:?}, brightness {bright:?}");
    }
}
