//! Turning one source image into training pixels: decode, crop, resize, pad; and the PNG codec
//! used for the optional compressed storage.

use std::str::FromStr;

use fast_image_resize::images::Image;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{DynamicImage, ImageFormat};
use serde::{Deserialize, Serialize};

/// How a source image is cropped before it is resized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Crop {
    /// The largest centred box of the target's aspect ratio (a square for square targets).
    Center,
    /// No crop: the whole image is squashed to the target shape (the book's recipe).
    None,
    /// A fixed box in source pixels.
    Box {
        /// Left edge.
        x: u32,
        /// Top edge.
        y: u32,
        /// Box width.
        width: u32,
        /// Box height.
        height: u32,
    },
}

impl FromStr for Crop {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "center" | "centre" => Ok(Crop::Center),
            "none" => Ok(Crop::None),
            _ => {
                let spec = s
                    .strip_prefix("box:")
                    .ok_or_else(|| format!("unknown crop {s:?}: use center, none or box:X,Y,WIDTH,HEIGHT"))?;
                let numbers: Vec<u32> = spec
                    .split(',')
                    .map(|n| n.trim().parse::<u32>())
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("crop {s:?}: {e}"))?;
                match numbers[..] {
                    [x, y, width, height] if width > 0 && height > 0 => Ok(Crop::Box { x, y, width, height }),
                    _ => Err(format!(
                        "crop {s:?}: expected box:X,Y,WIDTH,HEIGHT with WIDTH, HEIGHT > 0"
                    )),
                }
            }
        }
    }
}

/// The full recipe from a source image to stored pixels; recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Crop applied to the source.
    pub crop: Crop,
    /// Width after resizing (before padding).
    pub width: u32,
    /// Height after resizing (before padding).
    pub height: u32,
    /// Resampling filter (always `lanczos3`, applied in sRGB space).
    pub filter: String,
    /// Zero pixels added on every side after resizing (Fashion-MNIST: 2, 28 -> 32).
    pub pad: u32,
    /// Output channels: 1 (grayscale) or 3 (RGB).
    pub channels: u32,
}

impl Recipe {
    /// A square recipe: crop, then resize to `size` x `size` with `channels` channels.
    pub fn square(crop: Crop, size: u32, channels: u32) -> Self {
        Self {
            crop,
            width: size,
            height: size,
            filter: "lanczos3".into(),
            pad: 0,
            channels,
        }
    }

    /// Final image width including padding.
    pub fn out_width(&self) -> u32 {
        self.width + 2 * self.pad
    }

    /// Final image height including padding.
    pub fn out_height(&self) -> u32 {
        self.height + 2 * self.pad
    }

    /// Applies the recipe to a decoded image; returns HWC u8 pixels of the final shape.
    pub fn apply(&self, image: DynamicImage, resizer: &mut Resizer) -> Result<Vec<u8>, String> {
        let (src_w, src_h) = (image.width(), image.height());
        let (pixels, pixel_type) = match self.channels {
            1 => (image.into_luma8().into_raw(), PixelType::U8),
            3 => (image.into_rgb8().into_raw(), PixelType::U8x3),
            c => return Err(format!("unsupported channel count {c}")),
        };
        let (left, top, crop_w, crop_h) = self.crop_box(src_w, src_h)?;
        let resized = if (left, top, crop_w, crop_h) == (0, 0, self.width, self.height)
            && (src_w, src_h) == (self.width, self.height)
        {
            pixels
        } else {
            let src = Image::from_vec_u8(src_w, src_h, pixels, pixel_type).map_err(|e| e.to_string())?;
            let mut dst = Image::new(self.width, self.height, pixel_type);
            let options = ResizeOptions::new()
                .resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3))
                .crop(left as f64, top as f64, crop_w as f64, crop_h as f64);
            resizer.resize(&src, &mut dst, &options).map_err(|e| e.to_string())?;
            dst.into_vec()
        };
        Ok(self.pad_pixels(resized))
    }

    fn crop_box(&self, src_w: u32, src_h: u32) -> Result<(u32, u32, u32, u32), String> {
        match self.crop {
            Crop::None => Ok((0, 0, src_w, src_h)),
            Crop::Center => {
                // Largest box of the target aspect ratio, centred.
                let (tw, th) = (self.width as u64, self.height as u64);
                let (w, h) = if src_w as u64 * th <= src_h as u64 * tw {
                    (src_w, (src_w as u64 * th / tw) as u32)
                } else {
                    ((src_h as u64 * tw / th) as u32, src_h)
                };
                Ok(((src_w - w) / 2, (src_h - h) / 2, w.max(1), h.max(1)))
            }
            Crop::Box { x, y, width, height } => {
                if x + width > src_w || y + height > src_h {
                    Err(format!(
                        "crop box {width}x{height}+{x}+{y} does not fit in the {src_w}x{src_h} image"
                    ))
                } else {
                    Ok((x, y, width, height))
                }
            }
        }
    }

    fn pad_pixels(&self, pixels: Vec<u8>) -> Vec<u8> {
        if self.pad == 0 {
            return pixels;
        }
        let c = self.channels as usize;
        let (w, h, p) = (self.width as usize, self.height as usize, self.pad as usize);
        let out_w = w + 2 * p;
        let mut out = vec![0u8; out_w * (h + 2 * p) * c];
        for (row, src) in pixels.chunks_exact(w * c).enumerate() {
            let start = ((row + p) * out_w + p) * c;
            out[start..start + w * c].copy_from_slice(src);
        }
        out
    }
}

/// Decodes a JPEG or PNG file's bytes, rejecting truncated JPEGs (which decoders would otherwise
/// pad silently with grey).
pub fn decode(bytes: &[u8]) -> Result<DynamicImage, String> {
    let format = image::guess_format(bytes).map_err(|_| "not a JPEG or PNG image".to_string())?;
    if format == ImageFormat::Jpeg {
        // Every complete JPEG ends with the EOI marker; allow a little trailing padding.
        let tail = &bytes[bytes.len().saturating_sub(64)..];
        if !tail.windows(2).any(|w| w == [0xFF, 0xD9]) {
            return Err("truncated JPEG (no end-of-image marker)".into());
        }
    }
    image::load_from_memory_with_format(bytes, format).map_err(|e| format!("corrupt {format:?} image: {e}"))
}

/// Encodes HWC u8 pixels as PNG.
pub fn encode_png(pixels: &[u8], width: u32, height: u32, channels: u32) -> Result<Vec<u8>, image::ImageError> {
    let color = if channels == 1 {
        image::ExtendedColorType::L8
    } else {
        image::ExtendedColorType::Rgb8
    };
    let mut out = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut out),
        pixels,
        width,
        height,
        color,
    )?;
    Ok(out)
}

/// Decodes a PNG stored by [`encode_png`] back to HWC u8 pixels with `channels` channels.
pub fn decode_png(bytes: &[u8], channels: u32) -> Result<Vec<u8>, image::ImageError> {
    let image = image::load_from_memory_with_format(bytes, ImageFormat::Png)?;
    Ok(if channels == 1 {
        image.into_luma8().into_raw()
    } else {
        image.into_rgb8().into_raw()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe(crop: Crop, size: u32) -> Recipe {
        Recipe::square(crop, size, 3)
    }

    #[test]
    fn center_crop_of_celeba_is_the_middle_square() {
        assert_eq!(recipe(Crop::Center, 64).crop_box(178, 218).unwrap(), (0, 20, 178, 178));
        assert_eq!(recipe(Crop::None, 64).crop_box(178, 218).unwrap(), (0, 0, 178, 218));
        let wide = Recipe {
            width: 20,
            height: 10,
            ..recipe(Crop::Center, 10)
        };
        assert_eq!(wide.crop_box(100, 100).unwrap(), (0, 25, 100, 50));
    }

    #[test]
    fn box_crop_must_fit() {
        let r = recipe(
            Crop::Box {
                x: 10,
                y: 10,
                width: 100,
                height: 100,
            },
            32,
        );
        assert_eq!(r.crop_box(178, 218).unwrap(), (10, 10, 100, 100));
        let err = r.crop_box(100, 100).unwrap_err();
        assert!(err.contains("does not fit in the 100x100 image"), "{err}");
    }

    #[test]
    fn crop_parses_from_flags() {
        assert_eq!("center".parse::<Crop>().unwrap(), Crop::Center);
        assert_eq!("none".parse::<Crop>().unwrap(), Crop::None);
        assert_eq!(
            "box:1,2,30,40".parse::<Crop>().unwrap(),
            Crop::Box {
                x: 1,
                y: 2,
                width: 30,
                height: 40
            }
        );
        assert!("box:1,2,0,40".parse::<Crop>().is_err());
        assert!("middle".parse::<Crop>().is_err());
    }

    #[test]
    fn resize_keeps_flat_colours_and_pads_with_zeros() {
        let image = DynamicImage::ImageRgb8(image::RgbImage::from_pixel(178, 218, image::Rgb([10, 200, 90])));
        let pixels = recipe(Crop::Center, 16)
            .apply(image.clone(), &mut Resizer::new())
            .unwrap();
        assert_eq!(pixels.len(), 16 * 16 * 3);
        assert!(pixels.chunks(3).all(|p| p == [10, 200, 90]));
        let padded = Recipe {
            pad: 2,
            ..recipe(Crop::None, 4)
        };
        let pixels = padded.apply(image, &mut Resizer::new()).unwrap();
        assert_eq!(pixels.len(), 8 * 8 * 3);
        assert_eq!(&pixels[..3], &[0, 0, 0]);
        assert_eq!(&pixels[(2 * 8 + 2) * 3..(2 * 8 + 3) * 3], &[10, 200, 90]);
    }

    #[test]
    fn png_round_trip() {
        let pixels: Vec<u8> = (0..4 * 3 * 3).map(|i| i as u8 * 7).collect();
        let png = encode_png(&pixels, 4, 3, 3).unwrap();
        assert_eq!(decode_png(&png, 3).unwrap(), pixels);
    }
}
