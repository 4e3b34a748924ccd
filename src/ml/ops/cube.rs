//! [`UNetOps`] on burn's CubeCL backend (wgpu): compositions of burn's own operations, which
//! run as GPU kernels.

use burn::backend::ops::{ActivationOps as _, FloatTensorOps as _, ModuleOps as _};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Cube, TensorMetadata};
use burn::prelude::*;
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};
use burn::tensor::{IntDType, Slice};

use super::{UNetOps, bias_grad, sgd_momentum_composed};
use crate::kernels::crop::Crop;

/// `log sum_c exp(x_c)` over the classes (dimension 1), kept as a dimension of 1.
fn log_sum_exp_classes<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    let m = B::float_max_dim(x.clone(), 1);
    let e = B::float_exp(B::float_sub(x, m.clone()));
    B::float_add(B::float_log(B::float_sum_dim(e, 1)), m)
}

/// The window of `skip` that [`UNetOps::crop_cat`] keeps for an output of `h x w`, as
/// burn slices.
fn crop_slices(skip: [usize; 4], (h, w): (usize, usize)) -> [Slice; 4] {
    let [n, c, sh, sw] = skip;
    let (oy, ox) = Crop {
        full: (sh, sw),
        window: (h, w),
    }
    .origin();
    [
        Slice::from(0..n),
        Slice::from(0..c),
        Slice::from(oy..oy + h),
        Slice::from(ox..ox + w),
    ]
}

fn valid_options() -> ConvOptions<2> {
    ConvOptions::new([1, 1], [0, 0], [1, 1], 1)
}

fn up_options() -> ConvTransposeOptions<2> {
    ConvTransposeOptions::new([2, 2], [0, 0], [0, 0], [1, 1], 1)
}

/// Kernel, stride, padding and dilation of the U-Net's 2x2 max pooling, in burn's terms.
const POOL: ([usize; 2], [usize; 2], [usize; 2], [usize; 2]) = ([2, 2], [2, 2], [0, 0], [1, 1]);

impl UNetOps for Cube {
    fn weighted_cross_entropy(
        logits: FloatTensor<Self>,
        target: FloatTensor<Self>,
        weights: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let logp = Self::float_sub(logits.clone(), log_sum_exp_classes::<Self>(logits));
        let nll = Self::float_neg(Self::float_sum_dim(Self::float_mul(logp, target), 1));
        let total = Self::float_clamp_min(Self::float_sum(weights.clone()), 1e-12.into());
        Self::float_div(Self::float_sum(Self::float_mul(nll, weights)), total)
    }

    fn weighted_cross_entropy_grad(
        logits: FloatTensor<Self>,
        target: FloatTensor<Self>,
        weights: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        // w (sum_c t_c softmax - t) g / sum w
        let soft = Self::float_exp(Self::float_sub(
            logits.clone(),
            log_sum_exp_classes::<Self>(logits),
        ));
        let ts = Self::float_sum_dim(target.clone(), 1);
        let total = Self::float_clamp_min(Self::float_sum(weights.clone()), 1e-12.into());
        let scale = Self::float_reshape(Self::float_div(grad, total), Shape::new([1, 1, 1, 1]));
        let d = Self::float_sub(Self::float_mul(soft, ts), target);
        Self::float_mul(Self::float_mul(d, weights), scale)
    }

    fn sgd_momentum(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        velocity: FloatTensor<Self>,
        lr: f64,
        momentum: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        sgd_momentum_composed::<Self>(param, grad, velocity, lr, momentum)
    }

    fn dropout_mask(like: FloatTensor<Self>, keep: f64) -> FloatTensor<Self> {
        let mask = Self::float_random(
            like.shape(),
            burn::tensor::Distribution::Bernoulli(keep),
            &like.device(),
            burn::tensor::FloatDType::F32,
        );
        Self::float_mul_scalar(mask, (1.0 / keep).into())
    }

    fn conv3x3(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::conv2d(x, weight, Some(bias), valid_options())
    }
    fn conv3x3_relu(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::relu(Self::conv3x3(x, weight, bias))
    }
    fn relu_bias_grad(
        out: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let g = Self::relu_backward(out, grad);
        (g.clone(), bias_grad::<Self>(g))
    }
    fn up2x2(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::conv_transpose2d(x, weight, Some(bias), up_options())
    }
    fn up2x2_input_grad(weight: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::conv_transpose2d_x_backward(weight, grad, up_options())
    }
    fn up2x2_weight_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::conv_transpose2d_weight_backward(x, weight, grad, up_options())
    }
    fn conv3x3_input_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::conv2d_x_backward(x, weight, grad, valid_options())
    }
    fn conv3x3_weight_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::conv2d_weight_backward(x, weight, grad, valid_options())
    }
    fn pool2x2(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let (k, s, p, d) = POOL;
        Self::max_pool2d(x, k, s, p, d, false)
    }
    fn pool2x2_grad(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        // The forward pass kept no indices: pooling again is cheaper than storing them.
        let (k, s, p, d) = POOL;
        let pooled = Self::max_pool2d_with_indices(x.clone(), k, s, p, d, false, IntDType::I32);
        Self::max_pool2d_with_indices_backward(x, k, s, p, d, false, grad, pooled.indices).x_grad
    }
    fn pool2x2_grad_add(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        acc: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::float_add(Self::pool2x2_grad(x, grad), acc)
    }
    fn crop_cat(skip: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        let [.., h, w]: [usize; 4] = up.shape().dims();
        let window = crop_slices(skip.shape().dims(), (h, w));
        Self::float_cat(vec![Self::float_slice(skip, &window), up], 1)
    }
    fn crop_cat_grad(
        skip: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let shape = skip.shape();
        let dims: [usize; 4] = shape.dims();
        let [n, cs, ..] = dims;
        let [_, c, h, w]: [usize; 4] = grad.shape().dims();
        let part = |from: usize, to: usize| {
            let s = [0..n, from..to, 0..h, 0..w].map(Slice::from);
            Self::float_slice(grad.clone(), &s)
        };
        let (gs, gu) = (part(0, cs), part(cs, c));
        let zeros = Self::float_zeros(shape, &skip.device(), grad.dtype().into());
        let window = crop_slices(dims, (h, w));
        (Self::float_slice_assign(zeros, &window, gs), gu)
    }
}
