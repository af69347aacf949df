//! Rasterising: a [`Face`] painted as anti-aliased shapes onto a floating-point canvas, back to
//! front (background, hair behind the head, neck and clothes, ears, face, beard, nose, eyes,
//! mouth, hair over the forehead, hat, glasses), then pixel noise and 8 bits.

use image::RgbImage;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::face::{Beard, Face, Rgb, attr, lerp, scale};
use super::geometry::{BRIM_DY, BRIM_RX, BRIM_RY, EYE_DX, EYE_DY, FACE_RX, FACE_RY, H, HAT_BOTTOM, MOUTH_DY, W};
use crate::celeba::{HEIGHT, WIDTH};

/// Draws `face`, then adds pixel noise from `rng`.
pub(super) fn render(face: &Face, rng: &mut ChaCha8Rng) -> RgbImage {
    let mut canvas = Canvas::gradient(face.background);
    let head = Head::new(face);
    let c = &mut canvas;
    hair_behind(c, face, &head);
    neck_and_clothes(c, face, &head);
    ears(c, face, &head);
    skin(c, face, &head);
    beard(c, face, &head);
    nose(c, face, &head);
    eyes_and_brows(c, face, &head);
    mouth(c, face, &head);
    hair_in_front(c, face, &head);
    hat(c, face, &head);
    glasses(c, face, &head);
    if face.attrs[attr!("Blurry")] {
        c.box_blur();
        c.box_blur();
    }
    canvas.into_image(rng)
}

/// A floating-point RGB picture that shapes are painted onto.
struct Canvas {
    px: Vec<Rgb>,
}

impl Canvas {
    /// A smooth two-colour gradient in direction `angle`.
    fn gradient((b0, b1, angle): (Rgb, Rgb, f32)) -> Self {
        let (ux, uy) = (angle.cos(), angle.sin());
        Canvas {
            px: (0..W * H)
                .map(|i| {
                    let (x, y) = ((i % W) as f32 - 89.0, (i / W) as f32 - 109.0);
                    lerp(b0, b1, ((x * ux + y * uy) / 200.0 + 0.5).clamp(0.0, 1.0))
                })
                .collect(),
        }
    }

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

    /// Sensor-like noise from `rng`, then 8 bits.
    fn into_image(self, rng: &mut ChaCha8Rng) -> RgbImage {
        let mut raw = Vec::with_capacity(W * H * 3);
        for p in &self.px {
            for v in p {
                // Adding 0.5 and truncating rounds (the value is clamped non-negative first).
                raw.push(((v + rng.random_range(-5.0..5.0)).clamp(0.0, 255.0) + 0.5) as u8);
            }
        }
        RgbImage::from_raw(WIDTH, HEIGHT, raw).expect("buffer is WIDTH x HEIGHT x 3")
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

/// The measurements of one face in pixels, shared by the parts drawn on it.
struct Head {
    cx: f32,
    cy: f32,
    s: f32,
    /// The hair ellipse: centre and radii.
    hair: (f32, f32, f32, f32),
    /// Radii of the face ellipse (wider when chubby, narrower and longer when oval).
    frx: f32,
    fry: f32,
    /// The eyes' y.
    ey: f32,
    texture: HairTexture,
}

impl Head {
    fn new(face: &Face) -> Self {
        let (cx, cy, s) = (face.pose.cx, face.pose.cy, face.pose.s);
        let mut frx = FACE_RX * s;
        let mut fry = FACE_RY * s;
        if face.attrs[attr!("Chubby")] {
            frx *= 1.07;
        }
        if face.attrs[attr!("Oval_Face")] {
            frx *= 0.96;
            fry *= 1.03;
        }
        Head {
            cx,
            cy,
            s,
            hair: face.pose.hair(),
            frx,
            fry,
            ey: cy + EYE_DY * s,
            texture: HairTexture {
                base: face.hair,
                cx,
                phase: face.strands.0,
                wave: face.strands.1,
                sheen_y: cy - 64.0 * s,
            },
        }
    }

    /// Coverage of the face ellipse.
    fn face(&self, x: f32, y: f32) -> f32 {
        ellipse(x, y, self.cx, self.cy, self.frx, self.fry)
    }

    /// Bounds of the face ellipse.
    fn face_bounds(&self) -> [f32; 4] {
        around(self.cx, self.cy, self.frx, self.fry)
    }

    /// Hair colour at `(x, y)`.
    fn hair_colour(&self, x: f32, y: f32) -> Rgb {
        self.texture.at(x, y)
    }
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

/// Hair behind the head: to the ears when short, to the shoulders when long.
fn hair_behind(c: &mut Canvas, face: &Face, head: &Head) {
    let Head { cy, s, .. } = *head;
    let (hx, hy, hrx, hry) = head.hair;
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
        |x, y| head.hair_colour(x, y),
    );
}

/// Neck, shoulders and clothes, with a necktie or a necklace.
fn neck_and_clothes(c: &mut Canvas, face: &Face, head: &Head) {
    let Head { cx, cy, s, .. } = *head;
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
    if face.attrs[attr!("Wearing_Necktie")] {
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
    if face.attrs[attr!("Wearing_Necklace")] {
        let (ny, nrx, nry) = (cy + 56.0 * s, 16.0 * s, 9.0 * s);
        c.paint(
            around(cx, ny, nrx + 2.0, nry + 2.0),
            |x, y| ellipse(x, y, cx, ny, nrx + 1.4, nry + 1.4) * (1.0 - ellipse(x, y, cx, ny, nrx, nry)) * below(y, ny),
            |_, _| [222.0, 192.0, 96.0],
        );
    }
}

/// Ears (hidden by long hair), with earrings.
fn ears(c: &mut Canvas, face: &Face, head: &Head) {
    if face.long_hair {
        return;
    }
    let Head { cx, cy, s, .. } = *head;
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
        if face.attrs[attr!("Wearing_Earrings")] {
            let (rx, ry) = (ex + side * 0.5 * s, cy + 9.5 * s);
            c.paint(
                around(rx, ry, 3.0, 3.0),
                |x, y| ellipse(x, y, rx, ry, 2.2 * s, 2.2 * s),
                |_, _| [225.0, 200.0, 110.0],
            );
        }
    }
}

/// The face, shaded darker towards its edge, with a double chin, rosy cheeks or make-up, and
/// high cheekbones.
fn skin(c: &mut Canvas, face: &Face, head: &Head) {
    let Head {
        cx, cy, s, frx, fry, ..
    } = *head;
    let has = |i: usize| face.attrs[i];
    c.paint(
        head.face_bounds(),
        |x, y| head.face(x, y),
        |x, y| {
            let r2 = ((x - cx) / frx).powi(2) + ((y - cy + 12.0 * s) / fry).powi(2);
            scale(face.skin, 1.04 - 0.16 * r2)
        },
    );
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
}

/// Stubble, beards and moustaches, in the hair's colour.
fn beard(c: &mut Canvas, face: &Face, head: &Head) {
    let Head { cx, cy, s, .. } = *head;
    let beard_colour = scale(face.hair, 0.85);
    let beard_tex = |x: f32, y: f32| scale(beard_colour, 1.0 + 0.12 * ((x * 1.7).sin() * (y * 1.3).cos()));
    if face.attrs[attr!("5_o_Clock_Shadow")] {
        c.paint(
            head.face_bounds(),
            |x, y| {
                0.3 * head.face(x, y)
                    * below(y, cy + 8.0 * s)
                    * (1.0 - ellipse(x, y, cx, cy + 4.0 * s, 22.0 * s, 12.0 * s))
            },
            |_, _| lerp(face.skin, [60.0, 55.0, 55.0], 0.6),
        );
    }
    match face.beard {
        Beard::Full => c.paint(
            head.face_bounds(),
            |x, y| {
                0.92 * head.face(x, y)
                    * below(y, cy + 6.0 * s)
                    * (1.0 - ellipse(x, y, cx, cy + 5.0 * s, 24.0 * s, 13.0 * s))
            },
            beard_tex,
        ),
        Beard::Goatee => {
            let gy = cy + 37.0 * s;
            c.paint(
                around(cx, gy, 9.0 * s, 9.0 * s),
                |x, y| 0.92 * head.face(x, y) * ellipse(x, y, cx, gy, 9.0 * s, 8.0 * s),
                beard_tex,
            );
        }
        Beard::Mustache | Beard::None => {}
    }
    if face.attrs[attr!("Mustache")] {
        let my = cy + 17.0 * s;
        c.paint(
            around(cx, my, 13.0 * s, 4.0 * s),
            |x, y| 0.92 * ellipse(x, y, cx, my, 12.0 * s, 3.2 * s),
            beard_tex,
        );
    }
}

/// Nose: a soft shadow and two nostrils.
fn nose(c: &mut Canvas, face: &Face, head: &Head) {
    let Head { cx, cy, s, .. } = *head;
    let nose_rx = if face.attrs[attr!("Big_Nose")] {
        6.0 * s
    } else {
        4.5 * s
    };
    c.paint(
        around(cx, cy + 6.0 * s, nose_rx, 9.0 * s),
        |x, y| 0.45 * blob(x, y, cx + 1.5 * s, cy + 6.0 * s, nose_rx, 8.0 * s),
        |_, _| scale(face.skin, 0.78),
    );
    if face.attrs[attr!("Pointy_Nose")] {
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
}

/// Eyes (bags, liner, sclera, iris, pupil) and brows.
fn eyes_and_brows(c: &mut Canvas, face: &Face, head: &Head) {
    let Head { cx, s, ey, .. } = *head;
    let has = |i: usize| face.attrs[i];
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
}

/// Mouth: lips along a curve whose corners rise when smiling; dark inside when open.
fn mouth(c: &mut Canvas, face: &Face, head: &Head) {
    let Head { cx, cy, s, .. } = *head;
    let has = |i: usize| face.attrs[i];
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
}

/// Hair over the forehead, down to the hairline, and sideburns.
fn hair_in_front(c: &mut Canvas, face: &Face, head: &Head) {
    let Head { cx, cy, s, frx, .. } = *head;
    let (hx, hy, hrx, hry) = head.hair;
    let (pose, style) = (face.pose, face.hairline);
    c.paint(
        around(hx, hy, hrx, hry),
        |x, y| ellipse(x, y, hx, hy, hrx, hry) * above(y, pose.hairline(style, x)),
        |x, y| head.hair_colour(x, y),
    );
    if face.attrs[attr!("Sideburns")] {
        c.paint(
            head.face_bounds(),
            |x, y| {
                head.face(x, y)
                    * ((x - cx).abs() - (frx - 6.0 * s) + 0.5).clamp(0.0, 1.0)
                    * below(y, cy - 14.0 * s)
                    * above(y, cy + 5.0 * s)
            },
            |x, y| head.hair_colour(x, y),
        );
    }
}

/// A hat: a crown over the top of the hair and a brim, never below `hat_lowest`.
fn hat(c: &mut Canvas, face: &Face, head: &Head) {
    if !face.attrs[attr!("Wearing_Hat")] {
        return;
    }
    let Head { cx, cy, s, .. } = *head;
    let (hx, hy, _, _) = head.hair;
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

/// Glasses: two dark rims, a bridge and the arms, over lightly (or darkly) tinted lenses.
fn glasses(c: &mut Canvas, face: &Face, head: &Head) {
    if !face.attrs[attr!("Eyeglasses")] {
        return;
    }
    let Head { cx, s, ey, .. } = *head;
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
