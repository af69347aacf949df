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

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use image::RgbImage;
use image::codecs::jpeg::JpegEncoder;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::celeba::{ATTRIBUTES, Dialect, HEIGHT, WIDTH};
use crate::{Error, Result};

/// Index of attribute `name` in [`ATTRIBUTES`]; fails to compile (in a const context) if absent.
const fn attr_index(name: &str) -> usize {
    let mut i = 0;
    while i < ATTRIBUTES.len() {
        let a = ATTRIBUTES[i].as_bytes();
        let b = name.as_bytes();
        if a.len() == b.len() {
            let mut j = 0;
            while j < a.len() && a[j] == b[j] {
                j += 1;
            }
            if j == a.len() {
                return i;
            }
        }
        i += 1;
    }
    panic!("not a CelebA attribute")
}

/// Compile-time index of a CelebA attribute.
macro_rules! attr {
    ($name:literal) => {
        const { attr_index($name) }
    };
}

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

/// Writes `count` synthetic 178x218 face-like JPEGs and CelebA's annotation files under `output`
/// (created if missing).
///
/// Official dialect: `img_align_celeba/000001.jpg`..., `list_attr_celeba.txt` and
/// `list_eval_partition.txt`. Kaggle dialect: `img_align_celeba/img_align_celeba/000001.jpg`...,
/// `list_attr_celeba.csv` and `list_eval_partition.csv`. Images are numbered from 1 and split in
/// order like real CelebA: the first 162770/202599 train, the next 19867/202599 valid, the rest
/// test (rounded; with 3 or more images every split has at least one).
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
    let mut notes = Annotations::create(output, options.dialect, count)?;
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
            notes.row(&image_name(index), attrs, partition)?;
        }
        start = end;
    }
    notes.finish()?;
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
    PROBE_BOX
}

// --- Layout -----------------------------------------------------------------------------------

/// Images rendered (and held) per parallel batch.
const CHUNK: usize = 1024;
const JPEG_QUALITY: u8 = 90;
/// Real CelebA: 202599 images, 162770 train, 19867 valid, 19962 test.
const CELEBA_IMAGES: u128 = 202_599;
const CELEBA_TRAIN: u128 = 162_770;
const CELEBA_VALID: u128 = 19_867;
/// One image in every block of this many is blond.
const BLOND_BLOCK: usize = 5;

fn image_name(index: usize) -> String {
    format!("{:06}.jpg", index + 1)
}

/// (train, valid, test) image counts for `count` images, in CelebA's proportions.
fn split_sizes(count: usize) -> (usize, usize, usize) {
    let share = |part: u128| ((count as u128 * part + CELEBA_IMAGES / 2) / CELEBA_IMAGES) as usize;
    let mut train = share(CELEBA_TRAIN).min(count);
    let mut valid = share(CELEBA_VALID).min(count - train);
    if count >= 3 {
        valid = valid.max(1);
        train = train.clamp(1, count - valid - 1);
    }
    (train, valid, count - train - valid)
}

/// The two annotation files, written row by row.
struct Annotations {
    dialect: Dialect,
    attrs: BufWriter<File>,
    attrs_path: PathBuf,
    partition: BufWriter<File>,
    partition_path: PathBuf,
}

impl Annotations {
    fn create(output: &Path, dialect: Dialect, count: usize) -> Result<Self> {
        let (attrs_name, partition_name) = match dialect {
            Dialect::Official => ("list_attr_celeba.txt", "list_eval_partition.txt"),
            Dialect::Kaggle => ("list_attr_celeba.csv", "list_eval_partition.csv"),
        };
        let open = |path: &Path| File::create(path).map(BufWriter::new).map_err(|e| Error::io(path, e));
        let attrs_path = output.join(attrs_name);
        let partition_path = output.join(partition_name);
        let mut notes = Annotations {
            dialect,
            attrs: open(&attrs_path)?,
            attrs_path,
            partition: open(&partition_path)?,
            partition_path,
        };
        let (attrs_header, partition_header) = match dialect {
            // The real file has a trailing space after the last name.
            Dialect::Official => (format!("{count}\n{} \n", ATTRIBUTES.join(" ")), String::new()),
            Dialect::Kaggle => (
                format!("image_id,{}\n", ATTRIBUTES.join(",")),
                "image_id,partition\n".to_owned(),
            ),
        };
        notes.write(&attrs_header, &partition_header)?;
        Ok(notes)
    }

    fn row(&mut self, name: &str, attrs: &[bool; 40], partition: u8) -> Result<()> {
        let mut line = String::with_capacity(name.len() + 3 * attrs.len() + 1);
        line.push_str(name);
        for &value in attrs {
            line.push_str(match (self.dialect, value) {
                // The official file lines values up: two spaces before `1`, one before `-1`.
                (Dialect::Official, true) => "  1",
                (Dialect::Official, false) => " -1",
                (Dialect::Kaggle, true) => ",1",
                (Dialect::Kaggle, false) => ",-1",
            });
        }
        line.push('\n');
        let separator = match self.dialect {
            Dialect::Official => ' ',
            Dialect::Kaggle => ',',
        };
        self.write(&line, &format!("{name}{separator}{partition}\n"))
    }

    fn write(&mut self, attrs: &str, partition: &str) -> Result<()> {
        self.attrs
            .write_all(attrs.as_bytes())
            .map_err(|e| Error::io(&self.attrs_path, e))?;
        self.partition
            .write_all(partition.as_bytes())
            .map_err(|e| Error::io(&self.partition_path, e))
    }

    fn finish(mut self) -> Result<()> {
        self.attrs.flush().map_err(|e| Error::io(&self.attrs_path, e))?;
        self.partition.flush().map_err(|e| Error::io(&self.partition_path, e))
    }
}

/// Renders image `index` and writes it to `dir`; returns its attributes.
fn write_image(dir: &Path, seed: u64, index: usize) -> Result<[bool; 40]> {
    let (face, mut rng) = Face::sample(seed, index);
    let image = render(&face, &mut rng);
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

// --- Geometry ---------------------------------------------------------------------------------
//
// Lengths are in units that the pose's scale `s` (about 1.18 pixels per unit) turns into
// pixels; vertical offsets are relative to the face centre `cy` (negative = up). At the average
// pose the eyes are 35 px apart at y = 110 and the mouth is at y = 149, as in aligned CelebA.

/// Face centre of the average pose: aligned CelebA has the eyes near y = 110, centred at x = 89.
const FACE_X: f32 = 89.0;
const FACE_Y: f32 = 122.0;
const MAX_SHIFT_X: f32 = 5.0;
const MAX_SHIFT_Y: f32 = 2.0;
const MIN_SCALE: f32 = 1.13;
const MAX_SCALE: f32 = 1.23;
const FACE_RX: f32 = 36.0;
const FACE_RY: f32 = 47.0;
/// The hair ellipse (behind the head, and over the forehead above the hairline).
const HAIR_DY: f32 = -14.0;
const HAIR_RX: f32 = 47.0;
const HAIR_RY: f32 = 62.0;
/// A hat's crown covers the hair above `HAT_BOTTOM`; its brim is a flat ellipse.
const HAT_BOTTOM: f32 = -58.0;
const BRIM_DY: f32 = -59.0;
const BRIM_RX: f32 = 58.0;
const BRIM_RY: f32 = 3.0;
/// Eyes and mouth.
const EYE_DY: f32 = -10.0;
const EYE_DX: f32 = 15.0;
const MOUTH_DY: f32 = 23.0;
/// See [`hair_probe_box`]: between the lowest hat edge (y <= 60.8) and the highest hairline
/// (y >= 74.4) for every pose; `probe_box_is_inside_the_hair_for_every_pose` checks it.
const PROBE_BOX: (u32, u32, u32, u32) = (80, 64, 98, 71);

const W: usize = WIDTH as usize;
const H: usize = HEIGHT as usize;

/// Where the face is: centre and scale.
#[derive(Debug, Clone, Copy)]
struct Pose {
    cx: f32,
    cy: f32,
    s: f32,
}

/// How the hair meets the forehead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hairline {
    Normal,
    Bangs,
    Receding,
}

impl Pose {
    /// (centre x, centre y, radius x, radius y) of the hair.
    fn hair(self) -> (f32, f32, f32, f32) {
        (self.cx, self.cy + HAIR_DY * self.s, HAIR_RX * self.s, HAIR_RY * self.s)
    }

    /// The y of the forehead hairline at column `x`: hair is drawn over the face above it.
    fn hairline(self, style: Hairline, x: f32) -> f32 {
        // (height at the centre, drop towards the temples)
        let (top, drop) = match style {
            Hairline::Normal => (-37.0, 20.0),
            Hairline::Bangs => (-24.0, 4.0),
            Hairline::Receding => (-36.0, -7.0),
        };
        let t = ((x - self.cx) / (FACE_RX * self.s)).clamp(-1.3, 1.3);
        self.cy + (top + drop * t * t) * self.s
    }

    /// The lowest y any hat reaches.
    fn hat_lowest(self) -> f32 {
        self.cy + (BRIM_DY + BRIM_RY) * self.s
    }
}

// --- Sampling ---------------------------------------------------------------------------------

type Rgb = [f32; 3];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Beard {
    None,
    Full,
    Goatee,
    Mustache,
}

/// Everything random about one image.
#[derive(Debug, Clone)]
struct Face {
    attrs: [bool; 40],
    pose: Pose,
    hairline: Hairline,
    long_hair: bool,
    beard: Beard,
    sunglasses: bool,
    background: (Rgb, Rgb, f32),
    hair: Rgb,
    brows: Rgb,
    skin: Rgb,
    iris: Rgb,
    lips: Rgb,
    clothes: Rgb,
    hat: Rgb,
    frames: Rgb,
    tie: Rgb,
    /// Hair strands: phase and waviness.
    strands: (f32, f32),
    gaze: f32,
}

/// Whether image `index` is blond: see the blond balance rule on [`synth_celeba`].
fn is_blond(seed: u64, index: usize) -> bool {
    let block = index / BLOND_BLOCK;
    let position = if block == 0 {
        0
    } else {
        (splitmix64(seed ^ splitmix64(block as u64)) % BLOND_BLOCK as u64) as usize
    };
    index % BLOND_BLOCK == position
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Picks from `(weight, item)` pairs.
fn pick<T: Copy>(rng: &mut ChaCha8Rng, items: &[(f32, T)]) -> T {
    let total: f32 = items.iter().map(|(w, _)| w).sum();
    let mut r = rng.random::<f32>() * total;
    for &(w, item) in items {
        if r < w {
            return item;
        }
        r -= w;
    }
    items[items.len() - 1].1
}

/// `base` with its brightness scaled by up to `bright` and each channel moved by up to `per`.
fn jitter(rng: &mut ChaCha8Rng, base: Rgb, bright: f32, per: f32) -> Rgb {
    let f = 1.0 + rng.random_range(-bright..=bright);
    base.map(|v| (v * f + rng.random_range(-per..=per)).clamp(0.0, 255.0))
}

fn random_colour(rng: &mut ChaCha8Rng, lo: f32, hi: f32) -> Rgb {
    [
        rng.random_range(lo..hi),
        rng.random_range(lo..hi),
        rng.random_range(lo..hi),
    ]
}

fn scale(c: Rgb, f: f32) -> Rgb {
    c.map(|v| v * f)
}

fn lerp(a: Rgb, b: Rgb, t: f32) -> Rgb {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

impl Face {
    /// Draws image `index`'s face; returns it with the RNG, which then draws the pixel noise.
    fn sample(seed: u64, index: usize) -> (Face, ChaCha8Rng) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(index as u64);
        let r = &mut rng;
        let mut a = [false; 40];

        let male = r.random_bool(0.42);
        let young = r.random_bool(0.77);
        let blond = is_blond(seed, index);
        // Hair colour: blond is light yellow; everything else is dark, red-brown or grey.
        let hair = if blond {
            a[attr!("Blond_Hair")] = true;
            let base = pick(
                r,
                &[
                    (0.5, [228.0, 200.0, 120.0]),
                    (0.3, [215.0, 176.0, 92.0]),
                    (0.2, [238.0, 220.0, 150.0]),
                ],
            );
            jitter(r, base, 0.06, 10.0)
        } else {
            let gray = r.random_bool(if young { 0.03 } else { 0.35 });
            if gray {
                a[attr!("Gray_Hair")] = true;
                let base = pick(
                    r,
                    &[
                        (0.4, [150.0, 150.0, 155.0]),
                        (0.4, [188.0, 188.0, 192.0]),
                        (0.2, [118.0, 116.0, 118.0]),
                    ],
                );
                jitter(r, base, 0.06, 6.0)
            } else {
                let (base, attribute) = pick(
                    r,
                    &[
                        (0.40, ([22.0, 20.0, 20.0], Some(attr!("Black_Hair")))),
                        (0.27, ([58.0, 40.0, 28.0], Some(attr!("Brown_Hair")))),
                        (0.23, ([105.0, 72.0, 45.0], Some(attr!("Brown_Hair")))),
                        (0.10, ([130.0, 58.0, 35.0], None)),
                    ],
                );
                if let Some(i) = attribute {
                    a[i] = true;
                }
                jitter(r, base, 0.06, 8.0)
            }
        };
        let brows = if blond {
            jitter(r, [165.0, 128.0, 75.0], 0.08, 8.0)
        } else {
            scale(hair, 0.9)
        };

        a[attr!("Male")] = male;
        a[attr!("Young")] = young;
        a[attr!("Attractive")] = r.random_bool(if young { 0.6 } else { 0.25 });
        let pale = r.random_bool(0.043);
        a[attr!("Pale_Skin")] = pale;
        let skin = if pale {
            jitter(r, [248.0, 230.0, 218.0], 0.02, 4.0)
        } else {
            let base = pick(
                r,
                &[
                    (0.30, [236.0, 200.0, 176.0]),
                    (0.25, [222.0, 182.0, 150.0]),
                    (0.18, [200.0, 156.0, 122.0]),
                    (0.12, [170.0, 124.0, 92.0]),
                    (0.09, [132.0, 92.0, 64.0]),
                    (0.06, [95.0, 66.0, 46.0]),
                ],
            );
            jitter(r, base, 0.05, 6.0)
        };

        let long_hair = r.random_bool(if male { 0.08 } else { 0.85 });
        let receding = r.random_bool(if male { 0.14 } else { 0.03 });
        let bangs = !receding && r.random_bool(0.15);
        a[attr!("Receding_Hairline")] = receding;
        a[attr!("Bangs")] = bangs;
        let hairline = if receding {
            Hairline::Receding
        } else if bangs {
            Hairline::Bangs
        } else {
            Hairline::Normal
        };
        let wavy = r.random_bool(0.32);
        a[attr!("Wavy_Hair")] = wavy;
        a[attr!("Straight_Hair")] = !wavy && r.random_bool(0.3);
        a[attr!("Bald")] = false;

        // Beards: only men; `No_Beard` is false exactly when one is drawn.
        let beard = if male && r.random_bool(0.4) {
            pick(r, &[(0.45, Beard::Full), (0.3, Beard::Goatee), (0.25, Beard::Mustache)])
        } else {
            Beard::None
        };
        a[attr!("No_Beard")] = beard == Beard::None;
        a[attr!("Goatee")] = beard == Beard::Goatee;
        a[attr!("Mustache")] = beard == Beard::Mustache || (beard != Beard::None && r.random_bool(0.5));
        a[attr!("5_o_Clock_Shadow")] = male && beard != Beard::Full && r.random_bool(0.3);
        a[attr!("Sideburns")] = male && r.random_bool(0.13);

        let makeup = !male && r.random_bool(0.65);
        a[attr!("Heavy_Makeup")] = makeup;
        let lipstick = !male && r.random_bool(if makeup { 0.9 } else { 0.4 });
        a[attr!("Wearing_Lipstick")] = lipstick;
        a[attr!("Wearing_Earrings")] = !male && r.random_bool(0.33);
        a[attr!("Wearing_Necklace")] = !male && r.random_bool(0.2);
        a[attr!("Wearing_Necktie")] = male && r.random_bool(0.16);
        a[attr!("Rosy_Cheeks")] = !male && r.random_bool(0.1);
        a[attr!("Arched_Eyebrows")] = r.random_bool(if male { 0.05 } else { 0.42 });
        a[attr!("Bushy_Eyebrows")] = r.random_bool(if male { 0.25 } else { 0.06 });
        a[attr!("Big_Nose")] = r.random_bool(if male { 0.4 } else { 0.1 });
        a[attr!("Pointy_Nose")] = r.random_bool(0.28);
        a[attr!("Big_Lips")] = r.random_bool(0.24);
        a[attr!("Bags_Under_Eyes")] = r.random_bool(if young { 0.14 } else { 0.4 });
        a[attr!("Narrow_Eyes")] = r.random_bool(0.115);
        let chubby = r.random_bool(0.06);
        a[attr!("Chubby")] = chubby;
        a[attr!("Double_Chin")] = r.random_bool(if chubby { 0.5 } else { 0.02 });
        a[attr!("Oval_Face")] = !chubby && r.random_bool(0.3);
        let smiling = r.random_bool(0.48);
        a[attr!("Smiling")] = smiling;
        a[attr!("High_Cheekbones")] = r.random_bool(if smiling { 0.7 } else { 0.2 });
        a[attr!("Mouth_Slightly_Open")] = r.random_bool(if smiling { 0.7 } else { 0.25 });
        a[attr!("Eyeglasses")] = r.random_bool(0.065);
        a[attr!("Wearing_Hat")] = r.random_bool(0.048);
        a[attr!("Blurry")] = r.random_bool(0.05);

        let pose = Pose {
            cx: FACE_X + r.random_range(-MAX_SHIFT_X..=MAX_SHIFT_X),
            cy: FACE_Y + r.random_range(-MAX_SHIFT_Y..=MAX_SHIFT_Y),
            s: r.random_range(MIN_SCALE..=MAX_SCALE),
        };
        let lips = if lipstick {
            jitter(r, [185.0, 38.0, 62.0], 0.1, 12.0)
        } else {
            [skin[0] * 0.86, skin[1] * 0.6, skin[2] * 0.62]
        };
        let iris = pick(
            r,
            &[
                (0.4, [62.0, 40.0, 26.0]),
                (0.2, [100.0, 66.0, 36.0]),
                (0.1, [118.0, 100.0, 52.0]),
                (0.1, [78.0, 110.0, 70.0]),
                (0.15, [70.0, 112.0, 160.0]),
                (0.05, [110.0, 120.0, 130.0]),
            ],
        );
        let frames = pick(
            r,
            &[
                (0.6, [28.0, 26.0, 28.0]),
                (0.25, [92.0, 60.0, 34.0]),
                (0.15, [172.0, 172.0, 178.0]),
            ],
        );
        let face = Face {
            attrs: a,
            pose,
            hairline,
            long_hair,
            beard,
            sunglasses: r.random_bool(0.15),
            background: (
                random_colour(r, 20.0, 235.0),
                random_colour(r, 20.0, 235.0),
                r.random_range(0.0..std::f32::consts::TAU),
            ),
            hair,
            brows,
            skin,
            iris,
            lips,
            clothes: random_colour(r, 15.0, 230.0),
            hat: random_colour(r, 20.0, 220.0),
            frames,
            tie: random_colour(r, 20.0, 200.0),
            strands: (r.random_range(0.0..std::f32::consts::TAU), if wavy { 2.5 } else { 0.5 }),
            gaze: r.random_range(-1.2..=1.2),
        };
        (face, rng)
    }
}

// --- Drawing ----------------------------------------------------------------------------------

/// A floating-point RGB picture that shapes are painted onto.
struct Canvas {
    px: Vec<Rgb>,
}

impl Canvas {
    /// Paints over the pixels in `bounds` ([x0, y0, x1, y1]): each pixel centre `(x, y)` is
    /// blended towards `colour(x, y)` by `coverage(x, y)` (0 = untouched, 1 = replaced).
    fn paint(&mut self, bounds: [f32; 4], coverage: impl Fn(f32, f32) -> f32, colour: impl Fn(f32, f32) -> Rgb) {
        let clip = |v: f32, max: usize| (v.max(0.0) as usize).min(max);
        let (x0, x1) = (clip(bounds[0].floor(), W), clip(bounds[2].ceil(), W));
        let (y0, y1) = (clip(bounds[1].floor(), H), clip(bounds[3].ceil(), H));
        for y in y0..y1 {
            let fy = y as f32 + 0.5;
            for (i, p) in self.px[y * W + x0..y * W + x1].iter_mut().enumerate() {
                let fx = (x0 + i) as f32 + 0.5;
                let a = coverage(fx, fy);
                if a > 0.0 {
                    *p = lerp(*p, colour(fx, fy), a.min(1.0));
                }
            }
        }
    }

    /// Averages each pixel with its 8 neighbours.
    fn box_blur(&mut self) {
        let src = self.px.clone();
        for y in 0..H {
            for x in 0..W {
                let mut sum = [0.0; 3];
                let mut n = 0.0;
                for yy in y.saturating_sub(1)..(y + 2).min(H) {
                    for xx in x.saturating_sub(1)..(x + 2).min(W) {
                        let q = src[yy * W + xx];
                        sum = [sum[0] + q[0], sum[1] + q[1], sum[2] + q[2]];
                        n += 1.0;
                    }
                }
                self.px[y * W + x] = scale(sum, 1.0 / n);
            }
        }
    }
}

/// Bounds of an ellipse, one pixel wider all round.
fn around(cx: f32, cy: f32, rx: f32, ry: f32) -> [f32; 4] {
    [cx - rx - 1.0, cy - ry - 1.0, cx + rx + 1.0, cy + ry + 1.0]
}

/// Anti-aliased coverage of an ellipse at `(x, y)` (first-order distance to its edge).
fn ellipse(x: f32, y: f32, cx: f32, cy: f32, rx: f32, ry: f32) -> f32 {
    let (dx, dy) = (x - cx, y - cy);
    let f = (dx / rx).powi(2) + (dy / ry).powi(2) - 1.0;
    let (gx, gy) = (2.0 * dx / (rx * rx), 2.0 * dy / (ry * ry));
    let g = (gx * gx + gy * gy).sqrt().max(1e-4);
    (0.5 - f / g).clamp(0.0, 1.0)
}

/// Soft round blob: 1 at the centre fading to 0 at the ellipse's edge.
fn blob(x: f32, y: f32, cx: f32, cy: f32, rx: f32, ry: f32) -> f32 {
    let (dx, dy) = ((x - cx) / rx, (y - cy) / ry);
    (1.0 - (dx * dx + dy * dy).sqrt()).clamp(0.0, 1.0)
}

/// Coverage of the half-plane above the line `y = edge`.
fn above(y: f32, edge: f32) -> f32 {
    (edge - y + 0.5).clamp(0.0, 1.0)
}

/// Coverage of the half-plane below the line `y = edge`.
fn below(y: f32, edge: f32) -> f32 {
    (y - edge + 0.5).clamp(0.0, 1.0)
}

/// Coverage of a band of half-height `half` around the curve `centre`.
fn band(y: f32, centre: f32, half: f32) -> f32 {
    (half - (y - centre).abs() + 0.5).clamp(0.0, 1.0)
}

/// Hair colour with strands and a sheen.
struct HairTexture {
    base: Rgb,
    cx: f32,
    phase: f32,
    wave: f32,
    sheen_y: f32,
}

impl HairTexture {
    fn at(&self, x: f32, y: f32) -> Rgb {
        let strands = (self.phase + (x - self.cx) * 0.85 + self.wave * (y * 0.12 + self.phase).sin()).sin();
        let sheen = (-((y - self.sheen_y) / 9.0).powi(2)).exp();
        scale(self.base, 1.0 + 0.08 * strands + 0.1 * sheen)
    }
}

/// Draws `face`, then adds pixel noise from `rng`.
fn render(face: &Face, rng: &mut ChaCha8Rng) -> RgbImage {
    let Pose { cx, cy, s } = face.pose;
    let a = &face.attrs;
    let has = |i: usize| a[i];

    // Background: a smooth two-colour gradient in a random direction.
    let (b0, b1, angle) = face.background;
    let (ux, uy) = (angle.cos(), angle.sin());
    let mut canvas = Canvas {
        px: (0..W * H)
            .map(|i| {
                let (x, y) = ((i % W) as f32 - 89.0, (i / W) as f32 - 109.0);
                lerp(b0, b1, ((x * ux + y * uy) / 200.0 + 0.5).clamp(0.0, 1.0))
            })
            .collect(),
    };
    let c = &mut canvas;

    let (hx, hy, hrx, hry) = face.pose.hair();
    let hair = HairTexture {
        base: face.hair,
        cx,
        phase: face.strands.0,
        wave: face.strands.1,
        sheen_y: cy - 64.0 * s,
    };
    let hair_colour = |x: f32, y: f32| hair.at(x, y);

    // Hair behind the head: to the ears when short, to the shoulders when long.
    let hair_bottom = if face.long_hair { cy + 68.0 * s } else { cy + 6.0 * s };
    let long = face.long_hair;
    c.paint(
        [
            hx - hrx - 1.0,
            hy - hry - 1.0,
            hx + hrx + 1.0,
            (hy + hry).max(hair_bottom) + 1.0,
        ],
        |x, y| {
            let e = ellipse(x, y, hx, hy, hrx, hry);
            if long {
                let side = (hrx - (x - hx).abs() + 0.5).clamp(0.0, 1.0) * above(y, hair_bottom) * below(y, hy);
                e.max(side)
            } else {
                e * above(y, hair_bottom)
            }
        },
        hair_colour,
    );

    // Neck, shoulders and clothes.
    let neck_top = cy + 28.0 * s;
    c.paint(
        [cx - 17.0 * s, neck_top, cx + 17.0 * s, H as f32],
        |x, y| (15.0 * s - (x - cx).abs() + 0.5).clamp(0.0, 1.0) * below(y, neck_top),
        |x, _| scale(face.skin, 0.8 + 0.06 * (1.0 - ((x - cx) / (15.0 * s)).abs())),
    );
    let (sy, srx, sry) = (H as f32 + 20.0, 80.0 * s, 36.0 * s);
    c.paint(
        around(cx, sy, srx, sry),
        |x, y| ellipse(x, y, cx, sy, srx, sry),
        |x, _| scale(face.clothes, 1.0 - 0.18 * ((x - cx) / srx).abs()),
    );
    // A V of skin at the collar.
    c.paint(
        [cx - 16.0 * s, sy - sry - 1.0, cx + 16.0 * s, sy - sry + 16.0 * s],
        |x, y| {
            let depth = 14.0 * s * (1.0 - (x - cx).abs() / (15.0 * s));
            if depth > 0.0 {
                ellipse(x, y, cx, sy, srx, sry) * above(y, sy - sry + depth)
            } else {
                0.0
            }
        },
        |_, _| scale(face.skin, 0.84),
    );
    if has(attr!("Wearing_Necktie")) {
        let top = sy - sry + 2.0;
        c.paint(
            around(cx, top + 13.0, 6.0, 15.0),
            |x, y| ellipse(x, y, cx, top + 13.0, 5.0, 14.0),
            |_, _| face.tie,
        );
        c.paint(
            around(cx, top + 2.0, 5.0, 4.0),
            |x, y| ellipse(x, y, cx, top + 2.0, 4.0, 3.5),
            |_, _| scale(face.tie, 0.8),
        );
    }
    if has(attr!("Wearing_Necklace")) {
        let (ny, nrx, nry) = (cy + 56.0 * s, 16.0 * s, 9.0 * s);
        c.paint(
            around(cx, ny, nrx + 2.0, nry + 2.0),
            |x, y| ellipse(x, y, cx, ny, nrx + 1.4, nry + 1.4) * (1.0 - ellipse(x, y, cx, ny, nrx, nry)) * below(y, ny),
            |_, _| [222.0, 192.0, 96.0],
        );
    }

    // Ears (hidden by long hair), with earrings.
    if !long {
        for side in [-1.0, 1.0] {
            let ex = cx + side * 35.5 * s;
            let ey = cy - s;
            c.paint(
                around(ex, ey, 6.0 * s, 10.0 * s),
                |x, y| ellipse(x, y, ex, ey, 5.5 * s, 9.5 * s),
                |_, _| scale(face.skin, 0.93),
            );
            c.paint(
                around(ex, ey, 3.0 * s, 6.0 * s),
                |x, y| 0.6 * ellipse(x, y, ex + side * 0.8, ey, 2.5 * s, 5.5 * s),
                |_, _| scale(face.skin, 0.75),
            );
            if has(attr!("Wearing_Earrings")) {
                let (rx, ry) = (ex + side * 0.5 * s, cy + 9.5 * s);
                c.paint(
                    around(rx, ry, 3.0, 3.0),
                    |x, y| ellipse(x, y, rx, ry, 2.2 * s, 2.2 * s),
                    |_, _| [225.0, 200.0, 110.0],
                );
            }
        }
    }

    // The face, shaded darker towards its edge.
    let mut frx = FACE_RX * s;
    let mut fry = FACE_RY * s;
    if has(attr!("Chubby")) {
        frx *= 1.07;
    }
    if has(attr!("Oval_Face")) {
        frx *= 0.96;
        fry *= 1.03;
    }
    let face_cov = |x: f32, y: f32| ellipse(x, y, cx, cy, frx, fry);
    c.paint(around(cx, cy, frx, fry), face_cov, |x, y| {
        let r2 = ((x - cx) / frx).powi(2) + ((y - cy + 12.0 * s) / fry).powi(2);
        scale(face.skin, 1.04 - 0.16 * r2)
    });
    if has(attr!("Double_Chin")) {
        let chin = cy + fry - 4.0 * s;
        c.paint(
            around(cx, chin, 17.0 * s, 6.0 * s),
            |x, y| {
                0.6 * ellipse(x, y, cx, chin, 16.0 * s, 5.0 * s)
                    * (1.0 - ellipse(x, y, cx, chin - 2.0 * s, 16.0 * s, 5.0 * s))
            },
            |_, _| scale(face.skin, 0.8),
        );
    }
    if has(attr!("Rosy_Cheeks")) || has(attr!("Heavy_Makeup")) {
        let strength = if has(attr!("Rosy_Cheeks")) { 0.45 } else { 0.25 };
        for side in [-1.0, 1.0] {
            let (kx, ky) = (cx + side * 19.0 * s, cy + 8.0 * s);
            c.paint(
                around(kx, ky, 8.0 * s, 6.0 * s),
                |x, y| strength * blob(x, y, kx, ky, 8.0 * s, 6.0 * s),
                |_, _| [232.0, 110.0, 115.0],
            );
        }
    }
    if has(attr!("High_Cheekbones")) {
        for side in [-1.0, 1.0] {
            let (kx, ky) = (cx + side * 21.0 * s, cy + 2.0 * s);
            c.paint(
                around(kx, ky, 7.0 * s, 4.0 * s),
                |x, y| 0.25 * blob(x, y, kx, ky, 7.0 * s, 4.0 * s),
                |_, _| scale(face.skin, 1.12),
            );
        }
    }

    // Beards, stubble and sideburns, in the hair's colour.
    let beard_colour = scale(face.hair, 0.85);
    let beard_tex = |x: f32, y: f32| scale(beard_colour, 1.0 + 0.12 * ((x * 1.7).sin() * (y * 1.3).cos()));
    if has(attr!("5_o_Clock_Shadow")) {
        c.paint(
            around(cx, cy, frx, fry),
            |x, y| {
                0.3 * face_cov(x, y)
                    * below(y, cy + 8.0 * s)
                    * (1.0 - ellipse(x, y, cx, cy + 4.0 * s, 22.0 * s, 12.0 * s))
            },
            |_, _| lerp(face.skin, [60.0, 55.0, 55.0], 0.6),
        );
    }
    match face.beard {
        Beard::Full => c.paint(
            around(cx, cy, frx, fry),
            |x, y| {
                0.92 * face_cov(x, y)
                    * below(y, cy + 6.0 * s)
                    * (1.0 - ellipse(x, y, cx, cy + 5.0 * s, 24.0 * s, 13.0 * s))
            },
            beard_tex,
        ),
        Beard::Goatee => {
            let gy = cy + 37.0 * s;
            c.paint(
                around(cx, gy, 9.0 * s, 9.0 * s),
                |x, y| 0.92 * face_cov(x, y) * ellipse(x, y, cx, gy, 9.0 * s, 8.0 * s),
                beard_tex,
            );
        }
        Beard::Mustache | Beard::None => {}
    }
    if has(attr!("Mustache")) {
        let my = cy + 17.0 * s;
        c.paint(
            around(cx, my, 13.0 * s, 4.0 * s),
            |x, y| 0.92 * ellipse(x, y, cx, my, 12.0 * s, 3.2 * s),
            beard_tex,
        );
    }

    // Nose: a soft shadow and two nostrils.
    let nose_rx = if has(attr!("Big_Nose")) { 6.0 * s } else { 4.5 * s };
    c.paint(
        around(cx, cy + 6.0 * s, nose_rx, 9.0 * s),
        |x, y| 0.45 * blob(x, y, cx + 1.5 * s, cy + 6.0 * s, nose_rx, 8.0 * s),
        |_, _| scale(face.skin, 0.78),
    );
    if has(attr!("Pointy_Nose")) {
        c.paint(
            around(cx, cy + 9.0 * s, 3.0 * s, 3.0 * s),
            |x, y| 0.35 * blob(x, y, cx, cy + 9.0 * s, 2.5 * s, 2.5 * s),
            |_, _| scale(face.skin, 1.15),
        );
    }
    for side in [-1.0, 1.0] {
        let nx = cx + side * 3.5 * s;
        let ny = cy + 12.5 * s;
        c.paint(
            around(nx, ny, 2.0 * s, 2.0 * s),
            |x, y| 0.7 * ellipse(x, y, nx, ny, 1.8 * s, 1.2 * s),
            |_, _| scale(face.skin, 0.45),
        );
    }

    // Eyes and brows.
    let ey = cy + EYE_DY * s;
    let eye_ry = if has(attr!("Narrow_Eyes")) { 2.3 * s } else { 3.6 * s };
    let liner = if has(attr!("Heavy_Makeup")) { 1.0 } else { 0.7 };
    for side in [-1.0, 1.0] {
        let ex = cx + side * EYE_DX * s;
        if has(attr!("Bags_Under_Eyes")) {
            c.paint(
                around(ex, ey + 5.0 * s, 8.0 * s, 3.0 * s),
                |x, y| 0.3 * blob(x, y, ex, ey + 5.0 * s, 7.5 * s, 2.5 * s),
                |_, _| scale(face.skin, 0.7),
            );
        }
        c.paint(
            around(ex, ey, 9.0 * s, 6.0 * s),
            |x, y| liner * ellipse(x, y, ex, ey - 0.4, 7.9 * s, eye_ry + 1.1),
            |_, _| [40.0, 30.0, 30.0],
        );
        let sclera = |x: f32, y: f32| ellipse(x, y, ex, ey, 7.0 * s, eye_ry);
        c.paint(around(ex, ey, 8.0 * s, 5.0 * s), sclera, |_, _| [238.0, 235.0, 228.0]);
        let ix = ex + face.gaze * s;
        c.paint(
            around(ix, ey, 3.5 * s, 3.5 * s),
            |x, y| sclera(x, y) * ellipse(x, y, ix, ey, 3.2 * s, 3.2 * s),
            |_, _| face.iris,
        );
        c.paint(
            around(ix, ey, 2.0 * s, 2.0 * s),
            |x, y| sclera(x, y) * ellipse(x, y, ix, ey, 1.4 * s, 1.4 * s),
            |_, _| [15.0, 12.0, 12.0],
        );

        let (bx, by, half) = (ex + side * s, ey - 8.0 * s, 8.5 * s);
        let thick = if has(attr!("Bushy_Eyebrows")) {
            1.9 * s
        } else {
            1.15 * s
        };
        let arch = if has(attr!("Arched_Eyebrows")) {
            2.8 * s
        } else {
            1.3 * s
        };
        c.paint(
            [
                bx - half - 1.0,
                by - arch - thick - 2.0,
                bx + half + 1.0,
                by + thick + 2.0,
            ],
            |x, y| {
                let t = ((x - bx) / half).clamp(-1.0, 1.0);
                band(y, by - arch * (1.0 - t * t), thick * (1.0 - 0.4 * t * t))
                    * (half - (x - bx).abs() + 0.5).clamp(0.0, 1.0)
            },
            |_, _| face.brows,
        );
    }

    // Mouth: lips along a curve whose corners rise when smiling; dark inside when open.
    let my = cy + MOUTH_DY * s;
    let smiling = has(attr!("Smiling"));
    let open = has(attr!("Mouth_Slightly_Open"));
    let mw = if smiling { 12.5 * s } else { 11.0 * s };
    let bend = if smiling { 3.5 * s } else { 0.6 * s };
    let lip = if has(attr!("Big_Lips")) { 3.6 * s } else { 2.6 * s };
    let lip = if open { lip + 1.6 * s } else { lip };
    let curve = move |x: f32| {
        let t = ((x - cx) / mw).clamp(-1.0, 1.0);
        (my + bend * (0.5 - t * t), (1.0 - t * t).sqrt())
    };
    let mouth = move |x: f32, y: f32, half: f32| {
        let (centre, taper) = curve(x);
        band(y, centre, half * taper + 0.4) * (mw - (x - cx).abs() + 0.5).clamp(0.0, 1.0)
    };
    let mouth_bounds = [
        cx - mw - 1.0,
        my - bend - lip - 2.0,
        cx + mw + 1.0,
        my + bend + lip + 2.0,
    ];
    c.paint(mouth_bounds, |x, y| mouth(x, y, lip), |_, _| face.lips);
    if open {
        c.paint(mouth_bounds, |x, y| mouth(x, y, 1.7 * s), |_, _| [70.0, 24.0, 30.0]);
        if smiling {
            c.paint(
                mouth_bounds,
                |x, y| mouth(x, y, 1.7 * s) * above(y, curve(x).0 - 0.2),
                |_, _| [236.0, 230.0, 220.0],
            );
        }
    } else {
        c.paint(
            mouth_bounds,
            |x, y| 0.6 * mouth(x, y, 0.5),
            |_, _| scale(face.lips, 0.6),
        );
    }

    // Hair over the forehead, down to the hairline.
    let (pose, style) = (face.pose, face.hairline);
    c.paint(
        around(hx, hy, hrx, hry),
        |x, y| ellipse(x, y, hx, hy, hrx, hry) * above(y, pose.hairline(style, x)),
        hair_colour,
    );
    if has(attr!("Sideburns")) {
        c.paint(
            around(cx, cy, frx, fry),
            |x, y| {
                face_cov(x, y)
                    * ((x - cx).abs() - (frx - 6.0 * s) + 0.5).clamp(0.0, 1.0)
                    * below(y, cy - 14.0 * s)
                    * above(y, cy + 5.0 * s)
            },
            hair_colour,
        );
    }

    // A hat: a crown over the top of the hair and a brim, never below `hat_lowest`.
    if has(attr!("Wearing_Hat")) {
        let (crx, cry) = (52.0 * s, 67.0 * s);
        let bottom = cy + HAT_BOTTOM * s;
        c.paint(
            around(hx, hy, crx, cry),
            |x, y| ellipse(x, y, hx, hy, crx, cry) * above(y, bottom),
            |x, y| {
                let stripe = if (y - bottom).abs() < 6.0 * s { 0.75 } else { 1.0 };
                scale(face.hat, stripe * (1.05 - 0.15 * ((x - cx) / crx).abs()))
            },
        );
        let by = cy + BRIM_DY * s;
        let hat_lowest = face.pose.hat_lowest();
        let (brx, bry) = (BRIM_RX * s, BRIM_RY * s);
        c.paint(
            around(cx, by, brx, bry),
            |x, y| ellipse(x, y, cx, by, brx, bry) * above(y, hat_lowest),
            |_, _| scale(face.hat, 0.85),
        );
    }

    // Glasses: two dark rims, a bridge and the arms, over lightly (or darkly) tinted lenses.
    if has(attr!("Eyeglasses")) {
        let (orx, ory, irx, iry) = (11.0 * s, 8.0 * s, 9.4 * s, 6.5 * s);
        let tint = if face.sunglasses { 0.85 } else { 0.12 };
        for side in [-1.0, 1.0] {
            let ex = cx + side * EYE_DX * s;
            c.paint(
                around(ex, ey, orx, ory),
                |x, y| tint * ellipse(x, y, ex, ey, irx, iry),
                |_, _| [30.0, 32.0, 38.0],
            );
            c.paint(
                around(ex, ey, orx, ory),
                |x, y| ellipse(x, y, ex, ey, orx, ory) * (1.0 - ellipse(x, y, ex, ey, irx, iry)),
                |_, _| face.frames,
            );
            let (inner, outer) = (cx + side * (EYE_DX * s + orx - 0.5), cx + side * 36.0 * s);
            let (l, r) = (inner.min(outer), inner.max(outer));
            c.paint(
                [l, ey - 4.0 * s, r, ey],
                |_, y| band(y, ey - 2.0 * s, 0.8 * s),
                |_, _| face.frames,
            );
        }
        let half = EYE_DX * s - irx;
        c.paint(
            [cx - half, ey - 3.0 * s, cx + half, ey],
            |x, y| band(y, ey - 1.5 * s, 0.9 * s) * (half - (x - cx).abs() + 0.5).clamp(0.0, 1.0),
            |_, _| face.frames,
        );
    }

    if has(attr!("Blurry")) {
        c.box_blur();
        c.box_blur();
    }

    // Sensor-like noise, then 8 bits.
    let mut raw = Vec::with_capacity(W * H * 3);
    for p in &canvas.px {
        for v in p {
            // Adding 0.5 and truncating rounds (the value is clamped non-negative first).
            raw.push(((v + rng.random_range(-5.0..5.0)).clamp(0.0, 255.0) + 0.5) as u8);
        }
    }
    RgbImage::from_raw(WIDTH, HEIGHT, raw).expect("buffer is WIDTH x HEIGHT x 3")
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn probe_box_is_inside_the_hair_for_every_pose() {
        let (x0, y0, x1, y1) = hair_probe_box();
        let (x0, y0, x1, y1) = (x0 as f32, y0 as f32, x1 as f32, y1 as f32);
        let margin = 3.0;
        for cx in [FACE_X - MAX_SHIFT_X, FACE_X + MAX_SHIFT_X] {
            for cy in [FACE_Y - MAX_SHIFT_Y, FACE_Y + MAX_SHIFT_Y] {
                for s in [MIN_SCALE, MAX_SCALE] {
                    let pose = Pose { cx, cy, s };
                    assert!(pose.hat_lowest() + margin <= y0, "{pose:?}: a hat reaches the box");
                    let (hx, hy, hrx, hry) = pose.hair();
                    for x in [x0, (x0 + x1) / 2.0, x1] {
                        for y in [y0, y1] {
                            let f = ((x - hx) / (hrx - margin)).powi(2) + ((y - hy) / (hry - margin)).powi(2);
                            assert!(f < 1.0, "{pose:?}: ({x}, {y}) is outside the hair");
                        }
                        for style in [Hairline::Normal, Hairline::Bangs, Hairline::Receding] {
                            assert!(
                                pose.hairline(style, x) - margin >= y1,
                                "{pose:?} {style:?}: the forehead reaches the box at x = {x}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn splits_follow_celeba() {
        assert_eq!(split_sizes(202_599), (162_770, 19_867, 19_962));
        assert_eq!(split_sizes(0), (0, 0, 0));
        assert_eq!(split_sizes(1), (1, 0, 0));
        for count in 3..=500 {
            let (train, valid, test) = split_sizes(count);
            assert_eq!(train + valid + test, count);
            assert!(train >= 1 && valid >= 1 && test >= 1, "{count}: {train} {valid} {test}");
            assert!(train >= valid && train >= test);
        }

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
    fn blond_balance_and_hair_attributes() {
        for seed in [0, 1, 99] {
            assert!(is_blond(seed, 0) && !is_blond(seed, 1));
            for block in 0..100 {
                let blond = (block * BLOND_BLOCK..(block + 1) * BLOND_BLOCK)
                    .filter(|&i| is_blond(seed, i))
                    .count();
                assert_eq!(blond, 1);
            }
        }
        let hair = [
            attr!("Black_Hair"),
            attr!("Blond_Hair"),
            attr!("Brown_Hair"),
            attr!("Gray_Hair"),
        ];
        let mut seen = [0usize; 40];
        for index in 0..2000 {
            let (face, _) = Face::sample(3, index);
            let a = face.attrs;
            assert!(hair.iter().filter(|&&i| a[i]).count() <= 1);
            assert_eq!(a[attr!("Blond_Hair")], is_blond(3, index));
            assert!(!a[attr!("Bald")]);
            assert_eq!(a[attr!("No_Beard")], face.beard == Beard::None);
            assert!(a[attr!("Male")] || face.beard == Beard::None);
            for (n, &v) in seen.iter_mut().zip(&a) {
                *n += usize::from(v);
            }
        }
        for (name, n) in ATTRIBUTES.iter().zip(seen) {
            assert!(*name == "Bald" || (n > 0 && n < 2000), "{name} is constant");
        }
    }

    #[test]
    fn attribute_indices() {
        assert_eq!(ATTRIBUTES[attr!("Blond_Hair")], "Blond_Hair");
        assert_eq!(ATTRIBUTES[attr!("5_o_Clock_Shadow")], "5_o_Clock_Shadow");
        assert_eq!(ATTRIBUTES[attr!("Young")], "Young");
    }
}
