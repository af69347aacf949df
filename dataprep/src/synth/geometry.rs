//! Where the parts of a face are. Lengths are in units that the pose's scale `s` (about 1.18
//! pixels per unit) turns into pixels; vertical offsets are relative to the face centre `cy`
//! (negative = up). At the average pose the eyes are 35 px apart at y = 110 and the mouth is at
//! y = 149, as in aligned CelebA.

use crate::celeba::{HEIGHT, WIDTH};

/// Face centre of the average pose: aligned CelebA has the eyes near y = 110, centred at x = 89.
pub(super) const FACE_X: f32 = 89.0;
pub(super) const FACE_Y: f32 = 122.0;
pub(super) const MAX_SHIFT_X: f32 = 5.0;
pub(super) const MAX_SHIFT_Y: f32 = 2.0;
pub(super) const MIN_SCALE: f32 = 1.13;
pub(super) const MAX_SCALE: f32 = 1.23;
pub(super) const FACE_RX: f32 = 36.0;
pub(super) const FACE_RY: f32 = 47.0;
/// The hair ellipse (behind the head, and over the forehead above the hairline).
const HAIR_DY: f32 = -14.0;
const HAIR_RX: f32 = 47.0;
const HAIR_RY: f32 = 62.0;
/// A hat's crown covers the hair above `HAT_BOTTOM`; its brim is a flat ellipse.
pub(super) const HAT_BOTTOM: f32 = -58.0;
pub(super) const BRIM_DY: f32 = -59.0;
pub(super) const BRIM_RX: f32 = 58.0;
pub(super) const BRIM_RY: f32 = 3.0;
/// Eyes and mouth.
pub(super) const EYE_DY: f32 = -10.0;
pub(super) const EYE_DX: f32 = 15.0;
pub(super) const MOUTH_DY: f32 = 23.0;
/// See [`super::hair_probe_box`]: between the lowest hat edge (y <= 60.8) and the highest
/// hairline (y >= 74.4) for every pose; `probe_box_is_inside_the_hair_for_every_pose` checks it.
pub(super) const PROBE_BOX: (u32, u32, u32, u32) = (80, 64, 98, 71);

/// Image width and height in pixels.
pub(super) const W: usize = WIDTH as usize;
pub(super) const H: usize = HEIGHT as usize;

/// Where the face is: centre and scale.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pose {
    pub(super) cx: f32,
    pub(super) cy: f32,
    pub(super) s: f32,
}

/// How the hair meets the forehead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hairline {
    Normal,
    Bangs,
    Receding,
}

impl Pose {
    /// (centre x, centre y, radius x, radius y) of the hair.
    pub(super) fn hair(self) -> (f32, f32, f32, f32) {
        (self.cx, self.cy + HAIR_DY * self.s, HAIR_RX * self.s, HAIR_RY * self.s)
    }

    /// The y of the forehead hairline at column `x`: hair is drawn over the face above it.
    pub(super) fn hairline(self, style: Hairline, x: f32) -> f32 {
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
    pub(super) fn hat_lowest(self) -> f32 {
        self.cy + (BRIM_DY + BRIM_RY) * self.s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_box_is_inside_the_hair_for_every_pose() {
        let (x0, y0, x1, y1) = PROBE_BOX;
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
}
