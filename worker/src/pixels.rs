//! Pixels and tensors: a packed dataset's images (u8, HWC, image after image) as the networks'
//! float NCHW tensors in [-1, 1] ([`images_to_tensor`]), and a generator's images back to bytes
//! ([`to_u8_hwc`]). Training, evaluation and sample grids all convert through here.

use tch::{Device, Kind, Tensor};

/// Images u8 NHWC -> float NCHW in [-1, 1] on `device`, as `(x - 127.5) / 127.5`.
pub fn images_to_tensor(pixels: &[u8], batch: i64, size: i64, channels: i64, device: Device) -> Tensor {
    let x = Tensor::from_slice(pixels)
        .view([batch, size, size, channels])
        .to_device(device);
    (x.permute([0, 3, 1, 2]).to_kind(Kind::Float) - 127.5) / 127.5
}

/// Converts images in [-1, 1] `[n, c, h, w]` to u8 HWC bytes, image after image.
pub fn to_u8_hwc(images: &Tensor) -> Vec<u8> {
    let bytes = ((images.to_device(Device::Cpu).to_kind(Kind::Float) + 1.0) * 127.5)
        .round()
        .clamp(0.0, 255.0)
        .to_kind(Kind::Uint8)
        .permute([0, 2, 3, 1])
        .contiguous();
    let numel = bytes.numel();
    let mut out = vec![0u8; numel];
    bytes.copy_data(&mut out, numel);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_come_back_from_a_tensor_unchanged() {
        // Two 2x2 images of 3 channels, 0 and 255 among the bytes.
        let mut pixels: Vec<u8> = (0..24u32).map(|i| (i * 11) as u8).collect();
        pixels[5] = 255;
        let x = images_to_tensor(&pixels, 2, 2, 3, Device::Cpu);
        assert_eq!(x.size(), [2, 3, 2, 2]);
        // Channel c of pixel (h, w) of image n is byte ((n * 2 + h) * 2 + w) * 3 + c.
        let (n, h, w, c) = (1, 1, 0, 2);
        let expected = (f64::from(pixels[((n * 2 + h) * 2 + w) * 3 + c]) - 127.5) / 127.5;
        assert!((x.double_value(&[n as i64, c as i64, h as i64, w as i64]) - expected).abs() < 1e-6);
        assert!(x.min().double_value(&[]) >= -1.0 && x.max().double_value(&[]) <= 1.0);
        assert_eq!(to_u8_hwc(&x), pixels);
    }

    #[test]
    fn values_outside_the_range_are_clamped() {
        let x = Tensor::from_slice(&[-3.0f32, 3.0, 0.0]).view([1, 3, 1, 1]);
        assert_eq!(to_u8_hwc(&x), [0, 255, 128]);
    }
}
