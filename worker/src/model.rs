//! The conditional generator and critic of the seed (Foster, *Generative Deep Learning*, 2nd ed.,
//! `04_gan/03_cgan`), parameterised by image size, channels, classes, latent size and width.
//!
//! - Generator: `z ++ one-hot` as a 1x1 map -> ConvTranspose(k4, s1, valid) to 4x4, then one
//!   ConvTranspose(k4, s2, same) + BatchNorm + LeakyReLU(0.2) block per doubling, the last hidden
//!   one at half width, then ConvTranspose to the image channels + tanh. No bias before BatchNorm.
//! - Critic: the image with one constant plane per class appended, one Conv(k4, s2, same) +
//!   LeakyReLU block per halving down to 4x4 (first at half width; the second with the Keras default
//!   slope 0.3 as in the book, the others 0.2; dropout after all but the first), then Conv(k4, valid)
//!   to one unbounded score.
//!
//! Weights are initialised as Keras does (Glorot uniform kernels, zero biases, BatchNorm 1/0);
//! BatchNorm uses Keras's epsilon 1e-3 and momentum 0.9 (PyTorch momentum 0.1).

use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};

/// Shape of both networks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelSpec {
    /// Square image size (a power of two, at least 8).
    pub image_size: i64,
    /// Image channels (1 or 3).
    pub channels: i64,
    /// Number of classes of the condition.
    pub classes: i64,
    /// Latent vector length.
    pub z_dim: i64,
    /// Base channel count.
    pub width: i64,
    /// Critic dropout probability.
    pub dropout: f64,
}

impl ModelSpec {
    /// Number of stride-2 layers between 4x4 and the image size.
    fn doublings(&self) -> usize {
        (self.image_size / 4).trailing_zeros() as usize
    }
}

/// Keras's default kernel initialiser: Glorot (Xavier) uniform.
fn glorot(in_channels: i64, out_channels: i64, kernel: i64) -> nn::Init {
    let bound = (6.0 / (kernel * kernel * (in_channels + out_channels)) as f64).sqrt();
    nn::Init::Uniform { lo: -bound, up: bound }
}

fn batch_norm_config() -> nn::BatchNormConfig {
    nn::BatchNormConfig {
        eps: 1e-3,
        momentum: 0.1,
        ..Default::default()
    }
}

/// A LeakyReLU of fixed slope. tch exposes only the 0.01 default of `leaky_relu`, so this is a
/// PReLU with one constant weight: the same function in one kernel, with double backward
/// (measured faster than `max(x, slope * x)`).
#[derive(Debug)]
struct LeakyRelu(Tensor);

impl LeakyRelu {
    fn new(slope: f64, device: tch::Device) -> Self {
        Self(Tensor::from_slice(&[slope as f32]).to_device(device))
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        x.prelu(&self.0)
    }
}

/// Gives a 4-D tensor the channels-last memory layout (NHWC storage behind an NCHW view), which
/// the CPU and GPU convolution kernels run faster on; other tensors are returned as they are.
pub fn channels_last(x: &Tensor) -> Tensor {
    if x.dim() == 4 {
        x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
    } else {
        x.shallow_clone()
    }
}

/// The critic's input: the images with one constant plane per class appended, built in NHWC
/// order so the result is channels-last.
fn with_label_planes(images: &Tensor, onehot: &Tensor) -> Tensor {
    let (batch, classes) = onehot.size2().expect("one-hot is 2-D");
    let (_, _, height, width) = images.size4().expect("images are 4-D");
    let planes = onehot
        .view([batch, 1, 1, classes])
        .expand([batch, height, width, classes], false);
    Tensor::cat(&[&images.permute([0, 2, 3, 1]), &planes], 3).permute([0, 3, 1, 2])
}

/// The conditional generator.
#[derive(Debug)]
pub struct Generator {
    spec: ModelSpec,
    act: LeakyRelu,
    input: nn::ConvTranspose2D,
    input_bn: nn::BatchNorm,
    blocks: Vec<(nn::ConvTranspose2D, nn::BatchNorm)>,
    output: nn::ConvTranspose2D,
}

impl Generator {
    /// Creates the layers under `vs`; `device` is where the model will run (`vs` may still be
    /// on the CPU, where weights are initialised).
    pub fn new(vs: &nn::Path<'_>, spec: ModelSpec, device: tch::Device) -> Self {
        let w = spec.width;
        let convt = |vs: nn::Path<'_>, cin: i64, cout: i64, stride: i64, padding: i64, bias: bool| {
            let cfg = nn::ConvTransposeConfig {
                stride,
                padding,
                bias,
                ws_init: glorot(cin, cout, 4),
                bs_init: nn::Init::Const(0.0),
                ..Default::default()
            };
            nn::conv_transpose2d(vs, cin, cout, 4, cfg)
        };
        let input = convt(vs / "input", spec.z_dim + spec.classes, w, 1, 0, false);
        let input_bn = nn::batch_norm2d(vs / "input_bn", w, batch_norm_config());
        let hidden = spec.doublings() - 1;
        let mut blocks = Vec::with_capacity(hidden);
        let mut cin = w;
        for i in 0..hidden {
            let cout = if i + 1 == hidden { w / 2 } else { w };
            let conv = convt(vs / format!("block{i}"), cin, cout, 2, 1, false);
            let bn = nn::batch_norm2d(vs / format!("block{i}_bn"), cout, batch_norm_config());
            blocks.push((conv, bn));
            cin = cout;
        }
        let output = convt(vs / "output", cin, spec.channels, 2, 1, true);
        Self {
            spec,
            act: LeakyRelu::new(0.2, device),
            input,
            input_bn,
            blocks,
            output,
        }
    }

    /// Images in [-1, 1], `[batch, channels, size, size]`, for latents `[batch, z_dim]` and
    /// one-hot labels `[batch, classes]`.
    pub fn forward(&self, z: &Tensor, onehot: &Tensor, train: bool) -> Tensor {
        let batch = z.size()[0];
        let x = Tensor::cat(&[z, onehot], 1).view([batch, self.spec.z_dim + self.spec.classes, 1, 1]);
        let mut x = self.act.forward(&self.input_bn.forward_t(&x.apply(&self.input), train));
        for (conv, bn) in &self.blocks {
            x = self.act.forward(&bn.forward_t(&x.apply(conv), train));
        }
        x.apply(&self.output).tanh()
    }
}

/// The conditional critic.
#[derive(Debug)]
pub struct Critic {
    spec: ModelSpec,
    blocks: Vec<(nn::Conv2D, LeakyRelu, bool)>,
    output: nn::Conv2D,
}

impl Critic {
    /// Creates the layers under `vs`; `device` is where the model will run (`vs` may still be
    /// on the CPU, where weights are initialised).
    pub fn new(vs: &nn::Path<'_>, spec: ModelSpec, device: tch::Device) -> Self {
        let conv = |vs: nn::Path<'_>, cin: i64, cout: i64, stride: i64, padding: i64| {
            let cfg = nn::ConvConfig {
                stride,
                padding,
                ws_init: glorot(cin, cout, 4),
                bs_init: nn::Init::Const(0.0),
                ..Default::default()
            };
            nn::conv2d(vs, cin, cout, 4, cfg)
        };
        let mut blocks = Vec::new();
        let mut cin = spec.channels + spec.classes;
        for i in 0..spec.doublings() {
            let cout = if i == 0 { spec.width / 2 } else { spec.width };
            let slope = if i == 1 { 0.3 } else { 0.2 };
            blocks.push((
                conv(vs / format!("block{i}"), cin, cout, 2, 1),
                LeakyRelu::new(slope, device),
                i > 0,
            ));
            cin = cout;
        }
        let output = conv(vs / "output", cin, 1, 1, 0);
        Self { spec, blocks, output }
    }

    /// One score per image for images `[batch, channels, size, size]` with one-hot labels.
    pub fn forward(&self, images: &Tensor, onehot: &Tensor, train: bool) -> Tensor {
        let mut x = with_label_planes(images, onehot);
        for (conv, act, dropout) in &self.blocks {
            x = act.forward(&x.apply(conv));
            if *dropout && self.spec.dropout > 0.0 {
                x = x.dropout(self.spec.dropout, train);
            }
        }
        x.apply(&self.output).flatten(1, -1).squeeze_dim(1)
    }
}

/// One-hot float labels for class indices.
pub fn one_hot(classes: &Tensor, count: i64) -> Tensor {
    classes.one_hot(count).to_kind(Kind::Float)
}
