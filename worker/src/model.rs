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

/// A LeakyReLU of fixed slope, as ATen's `leaky_relu_backward(grad_output = x, self =
/// x.detach(), slope)`: `x` where `x > 0`, else `slope x`, in one kernel, with the slope chosen by
/// a detached copy of `x`.
///
/// Two reasons. tch exposes only the 0.01 default of `leaky_relu`. And the choice of slope is
/// piecewise constant in `x`, so nothing is lost by detaching it, while the gradient penalty
/// gains much: with `F.leaky_relu`, the penalty's double backward differentiates each
/// activation's backward with respect to the activation's input too, gets zeros
/// (`zeros_like` in ATen's derivative formula) and still runs them back through every
/// convolution of the interpolates' forward pass for both weight and input gradients. Detached,
/// the double backward stops at the first-order graph. The same parameter gradients (checked
/// in double precision against PyTorch's `F.leaky_relu`), with the critic's backward phase at
/// 1038 instead of 1332 ms per step and the whole step at 64 instead of 56 images/s (book
/// settings, 2 cores). A PReLU with a constant weight, used before, was slower than either: it
/// reduces over the whole tensor for its weight's gradient in the double backward.
#[derive(Debug, Clone, Copy)]
struct LeakyRelu(f64);

impl LeakyRelu {
    fn forward(self, x: &Tensor) -> Tensor {
        x.detach().leaky_relu_backward(x, self.0, false)
    }
}

/// Inverted dropout: zeroes each element with probability `p` and scales the rest by
/// `1 / (1 - p)`; `x` itself when `p` is 0 or `train` is false.
///
/// On CUDA this is ATen's fused dropout. On the CPU, ATen draws its mask with `bernoulli_`,
/// which took 31 ms for the 4.2 M elements of the book's largest critic activation on 2 cores
/// (more in channels-last order), as long as a convolution; [`cpu_dropout_mask`] takes 9 ms.
/// Draws from libtorch's global generator (seeded per step).
pub fn dropout(x: &Tensor, p: f64, train: bool) -> Tensor {
    if !train || p == 0.0 {
        x.shallow_clone()
    } else if x.device() == tch::Device::Cpu {
        x * cpu_dropout_mask(x, p)
    } else {
        x.dropout(p, true)
    }
}

/// [`dropout`] with its mask: `(dropout(x), m)` with `dropout(x) = x m`, `m` being 0 or
/// `1 / (1 - p)` per element (the factor a gradient passes back with); `None` when nothing drops.
fn dropout_with_mask(x: &Tensor, p: f64, train: bool) -> (Tensor, Option<Tensor>) {
    if !train || p == 0.0 {
        (x.shallow_clone(), None)
    } else if x.device() == tch::Device::Cpu {
        let mask = cpu_dropout_mask(x, p);
        (x * &mask, Some(mask))
    } else {
        let (out, keep) = x.native_dropout(p, true);
        (out, Some(keep.to_kind(x.kind()).g_mul_scalar_(1.0 / (1.0 - p))))
    }
}

/// A dropout mask for `x` on the CPU: `1 / (1 - p)` with probability `1 - p`, else 0. Draws 32
/// random bits per element (two per 64-bit draw over the generator's full range) and keeps those
/// below `(1 - p) 2^32`, exact to 2^-32. A 4-D mask is drawn in channels-last order, so that
/// multiplying it into the critic's channels-last activations reads both in memory order.
fn cpu_dropout_mask(x: &Tensor, p: f64) -> Tensor {
    let keep = 1.0 - p;
    let count = x.numel() as i64;
    let bits = Tensor::empty([(count + 1) / 2], (Kind::Int64, tch::Device::Cpu))
        .random_from_(i64::MIN, None)
        .view_dtype(Kind::Int)
        .narrow(0, 0, count);
    let threshold = (keep * 2f64.powi(32)).round() as i64 + i64::from(i32::MIN);
    let mask = bits.lt(threshold).to_kind(x.kind()).g_mul_scalar_(1.0 / keep);
    let size = x.size();
    match size[..] {
        [n, c, h, w] => mask.view([n, h, w, c]).permute([0, 3, 1, 2]),
        _ => mask.view(size.as_slice()),
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
    /// Creates the layers under `vs`.
    pub fn new(vs: &nn::Path<'_>, spec: ModelSpec) -> Self {
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
            act: LeakyRelu(0.2),
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
    /// Creates the layers under `vs`.
    pub fn new(vs: &nn::Path<'_>, spec: ModelSpec) -> Self {
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
            blocks.push((conv(vs / format!("block{i}"), cin, cout, 2, 1), LeakyRelu(slope), i > 0));
            cin = cout;
        }
        let output = conv(vs / "output", cin, 1, 1, 0);
        Self { spec, blocks, output }
    }

    /// One score per image for images `[batch, channels, size, size]` with one-hot labels.
    pub fn forward(&self, images: &Tensor, onehot: &Tensor, train: bool) -> Tensor {
        let x = self.blocks_forward(images, onehot, train, None);
        x.apply(&self.output).flatten(1, -1).squeeze_dim(1)
    }

    /// The gradient of the summed scores with respect to the images, `[batch, channels, size,
    /// size]`, as a differentiable function of the critic's weights: what the gradient penalty
    /// needs, without autograd's double backward.
    ///
    /// The images pass through the critic without a graph, keeping each block's pre-activation
    /// and dropout mask; the input gradient is then built by hand from the last layer down, one
    /// `conv_transpose2d` with each block's weight per block, the activations' slopes and the
    /// masks entering as constants (they are piecewise constant in the weights, so nothing is
    /// lost). Differentiating this with respect to the weights costs one convolution and one
    /// weight gradient per block, both ATen's fast kernels, where autograd's double backward of
    /// a convolution's backward computes its weight term as a convolution of transposed copies
    /// with the output gradient as a 16x16 dilated kernel: 64.2 against 74.0 images/s for the
    /// whole step at the book's settings on 2 cores (same values to 12 digits in double
    /// precision). Draws the same dropout masks as [`Critic::forward`] from the same seed.
    pub fn input_gradient(&self, images: &Tensor, onehot: &Tensor, train: bool) -> Tensor {
        let mut tape = Vec::with_capacity(self.blocks.len());
        let top = tch::no_grad(|| self.blocks_forward(images, onehot, train, Some(&mut tape)));
        // The output layer is a valid 4x4 convolution of the last 4x4 block to one score, so the
        // score's gradient with respect to that block is the output kernel, for every image.
        let mut grad = self.output.ws.expand(top.size(), false);
        let image_channels = images.size()[1];
        for (i, ((conv, act, _), (pre, mask))) in self.blocks.iter().zip(tape).enumerate().rev() {
            if let Some(mask) = mask {
                grad = grad.g_mul(&mask);
            }
            grad = pre.leaky_relu_backward(&grad, act.0, false);
            // The first block's label planes are constant: only the image channels' slice.
            let weight = if i == 0 {
                conv.ws.narrow(1, 0, image_channels)
            } else {
                conv.ws.shallow_clone()
            };
            grad = grad.conv_transpose2d(&weight, None::<Tensor>, [2, 2], [1, 1], [0, 0], 1, [1, 1]);
        }
        grad
    }

    /// The blocks' output for the images with their label planes; with a tape, each block's
    /// pre-activation and dropout mask are pushed on it.
    fn blocks_forward(
        &self,
        images: &Tensor,
        onehot: &Tensor,
        train: bool,
        mut tape: Option<&mut Vec<(Tensor, Option<Tensor>)>>,
    ) -> Tensor {
        let mut x = with_label_planes(images, onehot);
        for (conv, act, has_dropout) in &self.blocks {
            let pre = x.apply(conv);
            x = act.forward(&pre);
            let p = if *has_dropout { self.spec.dropout } else { 0.0 };
            match tape.as_deref_mut() {
                Some(tape) => {
                    let (out, mask) = dropout_with_mask(&x, p, train);
                    x = out;
                    tape.push((pre, mask));
                }
                None => x = dropout(&x, p, train),
            }
        }
        x
    }
}

/// One-hot float labels for class indices.
pub fn one_hot(classes: &Tensor, count: i64) -> Tensor {
    classes.one_hot(count).to_kind(Kind::Float)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaky_relu_has_its_slope_and_its_gradient() {
        let x = Tensor::from_slice(&[2.0f32, -1.0, 0.5, -3.0, 0.0]).set_requires_grad(true);
        let y = LeakyRelu(0.3).forward(&x);
        let expected = x.maximum(&(&x * 0.3));
        assert_eq!(
            Vec::<f32>::try_from(&y).unwrap(),
            Vec::<f32>::try_from(&expected).unwrap()
        );
        let grad = Tensor::run_backward(&[(&y * &y).sum(Kind::Float)], &[&x], false, false).remove(0);
        // d(y^2)/dx = 2 y y'.
        assert_eq!(Vec::<f32>::try_from(&grad).unwrap(), vec![4.0, -0.18, 1.0, -0.54, 0.0]);
    }

    /// The penalty's hand-built input gradient against autograd's, in double precision, with
    /// dropout on: the gradient itself and the penalty's gradients with respect to every weight
    /// (autograd's through its double backward).
    #[test]
    fn the_input_gradient_and_its_weight_gradients_match_autograds() {
        let _rng = crate::global_generator_lock();
        let spec = ModelSpec {
            image_size: 32,
            channels: 3,
            classes: 2,
            z_dim: 4,
            width: 8,
            dropout: 0.3,
        };
        tch::manual_seed(5);
        let mut vs = nn::VarStore::new(tch::Device::Cpu);
        let critic = Critic::new(&vs.root(), spec);
        vs.double();
        let opts = (Kind::Double, tch::Device::Cpu);
        let images = Tensor::rand([4, 3, 32, 32], opts).set_requires_grad(true);
        let onehot = one_hot(&Tensor::from_slice(&[0i64, 1, 1, 0]), 2).to_kind(Kind::Double);
        // The penalty does not depend on the biases.
        let mut weights: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(name, _)| name.ends_with(".weight"))
            .collect();
        weights.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(weights.len(), 4);
        let weights: Vec<&Tensor> = weights.iter().map(|(_, t)| t).collect();
        let penalty = |grad: &Tensor| grad.square().sum(Kind::Double);

        tch::manual_seed(9);
        let scores = critic.forward(&images, &onehot, true);
        let expected = Tensor::run_backward(&[scores.sum(Kind::Double)], &[&images], true, true).remove(0);
        let expected_weights = Tensor::run_backward(&[penalty(&expected)], &weights, true, false);
        tch::manual_seed(9);
        let grad = critic.input_gradient(&images.detach(), &onehot, true);
        let got_weights = Tensor::run_backward(&[penalty(&grad)], &weights, true, false);

        let diff = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]);
        assert!(expected.abs().max().double_value(&[]) > 1e-3, "a gradient to compare");
        assert!(
            diff(&grad, &expected) < 1e-12,
            "input gradient differs by {}",
            diff(&grad, &expected)
        );
        for ((g, e), name) in got_weights.iter().zip(&expected_weights).zip(1..) {
            assert!(diff(g, e) < 1e-12, "weight gradient {name} differs by {}", diff(g, e));
        }
    }

    #[test]
    fn dropout_keeps_each_element_with_its_probability_and_scales_it() {
        let _rng = crate::global_generator_lock();
        tch::manual_seed(11);
        let x = Tensor::ones([64, 32, 16, 16], (Kind::Float, tch::Device::Cpu));
        let x = channels_last(&x);
        let p = 0.3;
        let y = dropout(&x, p, true);
        assert_eq!(y.size(), x.size());
        let kept = y.ne(0.0).to_kind(Kind::Double).mean(Kind::Double).double_value(&[]);
        // 524288 draws: the kept share's standard deviation is 6.3e-4.
        assert!((kept - 0.7).abs() < 4e-3, "kept share {kept}");
        let values = y.masked_select(&y.ne(0.0));
        let scaled = 1.0 / (1.0 - p);
        assert!((values - scaled).abs().max().double_value(&[]) < 1e-6);
        // Channels and positions drop independently: every channel keeps about the same share.
        let per_channel = y
            .ne(0.0)
            .to_kind(Kind::Double)
            .mean_dim([0i64, 2, 3].as_slice(), false, Kind::Double);
        let (lo, hi) = (per_channel.min().double_value(&[]), per_channel.max().double_value(&[]));
        assert!(lo > 0.66 && hi < 0.74, "per-channel kept shares from {lo} to {hi}");
        // The same seed draws the same mask; evaluation and p = 0 leave the input alone.
        tch::manual_seed(11);
        assert!(dropout(&x, p, true).equal(&y));
        assert!(dropout(&x, p, false).equal(&x));
        assert!(dropout(&x, 0.0, true).equal(&x));
        let odd = dropout(&Tensor::ones([7], (Kind::Float, tch::Device::Cpu)), 0.5, true);
        assert_eq!(odd.size(), vec![7]);
    }
}
