//! The U-Net's operations as a burn backend extension ([`UNetOps`]): the 3x3 valid convolution
//! (with its fused ReLU), the 2x2 up-convolution, max pooling, the crop-and-concatenate of the
//! skip connections, dropout, the weighted cross-entropy and the SGD step. On `flex` (CPU)
//! they run the kernels of [`crate::kernels`] ([`flex`]); on the CubeCL (wgpu) backend they are
//! compositions of burn's own operations ([`cube`]); under autodiff each has a hand-written
//! backward ([`autodiff`]). The functions below are the `Tensor` API the rest of the code uses
//! on every device.

mod autodiff;
mod cube;
mod flex;

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, TensorMetadata, backend_extension};
use burn::prelude::*;

/// Backends that run the U-Net's operations (this extension's, beyond burn's own).
#[backend_extension(Autodiff, Flex, Cube)]
pub trait UNetOps: Backend {
    /// `y = conv3x3_valid(x, weight) + bias`; x `[N, Cin, H, W]`, weight `[Cout, Cin, 3, 3]`,
    /// bias `[Cout]`; y `[N, Cout, H - 2, W - 2]`.
    fn conv3x3(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// `relu(conv3x3(x, weight, bias))` in one pass over the output.
    fn conv3x3_relu(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// The gradient before a ReLU, `grad` where the ReLU's output `out` (`[N, C, H, W]`) is
    /// positive, else 0; and its sum per channel (`[C]`), the gradient of a bias added before
    /// the ReLU.
    fn relu_bias_grad(
        out: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// The U-Net's 2x2 stride-2 up-convolution: x `[N, Cin, H, W]`, weight
    /// `[Cin, Cout, 2, 2]` (burn's transposed-convolution layout), bias `[Cout]`;
    /// y `[N, Cout, 2H, 2W]`.
    fn up2x2(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// Gradient of the up-convolution's input.
    fn up2x2_input_grad(weight: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self>;

    /// Gradient of the up-convolution's weight.
    fn up2x2_weight_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// Gradient of the input.
    fn conv3x3_input_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// Gradient of the weight.
    fn conv3x3_weight_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// 2x2 max pooling with stride 2: x `[N, C, H, W]` -> `[N, C, H / 2, W / 2]`.
    fn pool2x2(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// Gradient of the pooling's input from the gradient of its output: each output's
    /// gradient goes to the first maximum of its window.
    fn pool2x2_grad(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self>;

    /// `pool2x2_grad(x, grad) + acc`: the pooling's gradient added to another gradient of its
    /// input (the skip connection's), in place where the backend can.
    fn pool2x2_grad_add(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        acc: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// The U-Net's crop-and-concat: the centre of `skip` (`[N, Cs, Hs, Ws]`, cropped to the
    /// size of `up`) and then `up` (`[N, Cu, H, W]`) along the channels: `[N, Cs + Cu, H, W]`.
    fn crop_cat(skip: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self>;

    /// Gradients of [`Self::crop_cat`]'s inputs from that of its output: `skip`'s (zero outside
    /// the window; `skip` gives the shape) and `up`'s.
    fn crop_cat_grad(
        skip: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// A dropout mask shaped like `like`: each value `1 / keep` with probability `keep`, else
    /// 0, from the device's seeded generator. A constant: no gradient flows into it.
    fn dropout_mask(like: FloatTensor<Self>, keep: f64) -> FloatTensor<Self>;

    /// The U-Net's loss ([`super::loss::weighted_cross_entropy`]): `logits` and one-hot
    /// `target` `[N, K, H, W]`, `weights` `[N, 1, H, W]`; a `[1]` tensor. Differentiable in
    /// `logits` only.
    fn weighted_cross_entropy(
        logits: FloatTensor<Self>,
        target: FloatTensor<Self>,
        weights: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// The loss's gradient with respect to the logits, times `grad` (`[1]`).
    fn weighted_cross_entropy_grad(
        logits: FloatTensor<Self>,
        target: FloatTensor<Self>,
        weights: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// One step of SGD with momentum for a parameter of any rank: `v = momentum v + grad`,
    /// `param -= lr v`; returns `(param, v)`. Not differentiable (the optimiser runs on the
    /// tensors inside autodiff's).
    fn sgd_momentum(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        velocity: FloatTensor<Self>,
        lr: f64,
        momentum: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

/// `conv3x3_valid(x, weight) + bias` on any device.
pub fn conv3x3(x: Tensor<4>, weight: Tensor<4>, bias: Tensor<1>) -> Tensor<4> {
    Tensor::from_dispatch(Dispatch::conv3x3(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
    ))
}

/// The 2x2 stride-2 up-convolution (`weight` `[Cin, Cout, 2, 2]`) on any device.
pub fn up2x2(x: Tensor<4>, weight: Tensor<4>, bias: Tensor<1>) -> Tensor<4> {
    Tensor::from_dispatch(Dispatch::up2x2(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
    ))
}

/// The U-Net's crop-and-concat on any device: the centre of `skip` (`[N, Cs, Hs, Ws]`),
/// cropped to the size of `up` (`[N, Cu, H, W]`), then `up`, along the channels:
/// `[N, Cs + Cu, H, W]`. One pass on the CPU (burn's crop then concatenation copied the crop
/// strided, single-threaded, and its gradient went through a zero map and an assignment).
pub fn crop_cat(skip: Tensor<4>, up: Tensor<4>) -> Tensor<4> {
    Tensor::from_dispatch(Dispatch::crop_cat(skip.into_dispatch(), up.into_dispatch()))
}

/// Dropout as burn's [`Dropout`](burn::nn::Dropout) module applies it (while training, on a
/// device that records gradients): `x` times a mask of `1 / keep` with probability
/// `keep = 1 - prob`, else 0; the identity otherwise. The mask is drawn in parallel on the CPU
/// ([`UNetOps::dropout_mask`]).
pub fn dropout(d: &burn::nn::Dropout, x: Tensor<4>) -> Tensor<4> {
    if !d.training.is_enabled() || !x.device().is_autodiff() || d.prob == 0.0 {
        return x;
    }
    let like = x.clone().into_dispatch();
    let mask = Tensor::from_dispatch(Dispatch::dropout_mask(like, 1.0 - d.prob));
    x * mask
}

/// One step of SGD with momentum on parameters of any shape, on any device: `v = momentum v +
/// grad`, `param -= lr v`. Returns `(param, v)`; on the CPU one parallel pass that updates
/// `param` and `velocity` in place when no other tensor shares them.
pub fn sgd_momentum<const D: usize>(
    param: Tensor<D>,
    grad: Tensor<D>,
    velocity: Tensor<D>,
    lr: f64,
    momentum: f64,
) -> (Tensor<D>, Tensor<D>) {
    let (p, v) = Dispatch::sgd_momentum(
        param.into_dispatch(),
        grad.into_dispatch(),
        velocity.into_dispatch(),
        lr,
        momentum,
    );
    (Tensor::from_dispatch(p), Tensor::from_dispatch(v))
}

/// 2x2 max pooling with stride 2 on any device (`[N, C, H, W] -> [N, C, H / 2, W / 2]`).
pub fn max_pool2x2(x: Tensor<4>) -> Tensor<4> {
    Tensor::from_dispatch(Dispatch::pool2x2(x.into_dispatch()))
}

/// `relu(conv3x3_valid(x, weight) + bias)` on any device, fused where the backend can.
pub fn conv3x3_relu(x: Tensor<4>, weight: Tensor<4>, bias: Tensor<1>) -> Tensor<4> {
    Tensor::from_dispatch(Dispatch::conv3x3_relu(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
    ))
}

/// The gradient of a per-channel bias: the output gradient summed over batch and space.
pub(crate) fn bias_grad<B: Backend>(grad: FloatTensor<B>) -> FloatTensor<B> {
    let [n, c, h, wd]: [usize; 4] = grad.shape().dims();
    let g = B::float_reshape(grad, Shape::new([n, c, h * wd]));
    let g = B::float_sum_dim(B::float_sum_dim(g, 2), 0);
    B::float_reshape(g, Shape::new([c]))
}

/// [`UNetOps::sgd_momentum`] as burn's element-wise operations.
pub(crate) fn sgd_momentum_composed<B: Backend>(
    param: FloatTensor<B>,
    grad: FloatTensor<B>,
    velocity: FloatTensor<B>,
    lr: f64,
    momentum: f64,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let v = B::float_add(B::float_mul_scalar(velocity, momentum.into()), grad);
    let p = B::float_sub(param, B::float_mul_scalar(v.clone(), lr.into()));
    (p, v)
}
