//! One image's face, drawn at random: its 40 attributes and the parameters they imply (colours,
//! pose, hairline, beard...), so that every visible attribute matches the drawing.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::geometry::{FACE_X, FACE_Y, Hairline, MAX_SCALE, MAX_SHIFT_X, MAX_SHIFT_Y, MIN_SCALE, Pose};
use crate::celeba::ATTRIBUTES;
use base::seed::mix;

/// Index of attribute `name` in [`ATTRIBUTES`]; fails to compile (in a const context) if absent.
pub(super) const fn attr_index(name: &str) -> usize {
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
        const { $crate::synth::face::attr_index($name) }
    };
}
pub(super) use attr;

/// One image in every block of this many is blond.
pub(super) const BLOND_BLOCK: usize = 5;

/// A colour, channels in 0..=255.
pub(super) type Rgb = [f32; 3];

/// `c` with every channel multiplied by `f`.
pub(super) fn scale(c: Rgb, f: f32) -> Rgb {
    c.map(|v| v * f)
}

/// The colour a fraction `t` of the way from `a` to `b`.
pub(super) fn lerp(a: Rgb, b: Rgb, t: f32) -> Rgb {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Beard {
    None,
    Full,
    Goatee,
    Mustache,
}

/// Everything random about one image.
#[derive(Debug, Clone)]
pub(super) struct Face {
    pub(super) attrs: [bool; 40],
    pub(super) pose: Pose,
    pub(super) hairline: Hairline,
    pub(super) long_hair: bool,
    pub(super) beard: Beard,
    pub(super) sunglasses: bool,
    /// Two colours and the direction of the gradient between them.
    pub(super) background: (Rgb, Rgb, f32),
    pub(super) hair: Rgb,
    pub(super) brows: Rgb,
    pub(super) skin: Rgb,
    pub(super) iris: Rgb,
    pub(super) lips: Rgb,
    pub(super) clothes: Rgb,
    pub(super) hat: Rgb,
    pub(super) frames: Rgb,
    pub(super) tie: Rgb,
    /// Hair strands: phase and waviness.
    pub(super) strands: (f32, f32),
    pub(super) gaze: f32,
}

/// Whether image `index` is blond: see the blond balance rule on [`super::synth_celeba`].
pub(super) fn is_blond(seed: u64, index: usize) -> bool {
    let block = index / BLOND_BLOCK;
    let position = if block == 0 {
        0
    } else {
        (mix(&[seed, block as u64]) % BLOND_BLOCK as u64) as usize
    };
    index % BLOND_BLOCK == position
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

impl Face {
    /// Draws image `index`'s face; returns it with the RNG, which then draws the pixel noise.
    ///
    /// The helpers below draw from the one stream in a fixed order: changing that order changes
    /// every image.
    pub(super) fn sample(seed: u64, index: usize) -> (Face, ChaCha8Rng) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(index as u64);
        let r = &mut rng;
        let mut a = [false; 40];

        let male = r.random_bool(0.42);
        let young = r.random_bool(0.77);
        a[attr!("Male")] = male;
        a[attr!("Young")] = young;
        let (hair, brows) = hair_colours(r, &mut a, is_blond(seed, index), young);
        a[attr!("Attractive")] = r.random_bool(if young { 0.6 } else { 0.25 });
        let skin = skin_colour(r, &mut a);
        let (hairline, long_hair, wavy) = hair_style(r, &mut a, male);
        let beard = beard(r, &mut a, male);
        make_up_and_features(r, &mut a, male, young);
        let pose = Pose {
            cx: FACE_X + r.random_range(-MAX_SHIFT_X..=MAX_SHIFT_X),
            cy: FACE_Y + r.random_range(-MAX_SHIFT_Y..=MAX_SHIFT_Y),
            s: r.random_range(MIN_SCALE..=MAX_SCALE),
        };
        let lips = if a[attr!("Wearing_Lipstick")] {
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

/// Hair and brow colours. Blond is light yellow; everything else is dark, red-brown or grey.
fn hair_colours(r: &mut ChaCha8Rng, a: &mut [bool; 40], blond: bool, young: bool) -> (Rgb, Rgb) {
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
    } else if r.random_bool(if young { 0.03 } else { 0.35 }) {
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
    };
    let brows = if blond {
        jitter(r, [165.0, 128.0, 75.0], 0.08, 8.0)
    } else {
        scale(hair, 0.9)
    };
    (hair, brows)
}

/// Skin tone, and `Pale_Skin`.
fn skin_colour(r: &mut ChaCha8Rng, a: &mut [bool; 40]) -> Rgb {
    let pale = r.random_bool(0.043);
    a[attr!("Pale_Skin")] = pale;
    if pale {
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
    }
}

/// (hairline, long hair, wavy) with their attributes; nobody is drawn bald.
fn hair_style(r: &mut ChaCha8Rng, a: &mut [bool; 40], male: bool) -> (Hairline, bool, bool) {
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
    (hairline, long_hair, wavy)
}

/// Beards, moustaches, stubble and sideburns: only men; `No_Beard` is false exactly when a beard
/// is drawn.
fn beard(r: &mut ChaCha8Rng, a: &mut [bool; 40], male: bool) -> Beard {
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
    beard
}

/// Make-up, jewellery, and the shape of the face, eyes, nose and mouth.
fn make_up_and_features(r: &mut ChaCha8Rng, a: &mut [bool; 40], male: bool, young: bool) {
    let makeup = !male && r.random_bool(0.65);
    a[attr!("Heavy_Makeup")] = makeup;
    a[attr!("Wearing_Lipstick")] = !male && r.random_bool(if makeup { 0.9 } else { 0.4 });
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_indices() {
        assert_eq!(ATTRIBUTES[attr!("Blond_Hair")], "Blond_Hair");
        assert_eq!(ATTRIBUTES[attr!("5_o_Clock_Shadow")], "5_o_Clock_Shadow");
        assert_eq!(ATTRIBUTES[attr!("Young")], "Young");
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
}
