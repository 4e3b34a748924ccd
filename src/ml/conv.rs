//! The 3x3 valid convolution of the U-Net as a burn backend extension: on `flex` (CPU) it runs
//! the blocked im2col + GEMM kernels of [`super::conv_cpu`] for the forward pass and both
//! gradients; on the CubeCL (wgpu) backend it is burn's own convolution. Autodiff has a
//! hand-written backward that calls the backend's gradient kernels, so the rest of the code
//! uses one `Tensor` API on every device.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::ops::{ActivationOps as _, FloatTensorOps as _, ModuleOps as _};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Cube, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::module::{Module, Param};
use burn::prelude::*;
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};
use burn::tensor::{IntDType, Slice};
use rayon::prelude::*;
use std::any::Any;
use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::conv_cpu::{
    ConvShape, Crop, UpShape, conv3x3_forward_uninit, conv3x3_input_grad_uninit,
    conv3x3_weight_grad, copy_into, crop_into, filled_in_parallel, pool2x2_backward_add_into,
    pool2x2_backward_into, pool2x2_forward_into, relu_bias_grad_in_place, uncrop_into,
    up2x2_forward_into, up2x2_input_grad_into, up2x2_weight_grad, zeroed,
};
use super::loss::{weighted_cross_entropy_grad_values, weighted_cross_entropy_values};

/// Backends that run the U-Net's 3x3 valid convolution.
#[backend_extension(Autodiff, Flex, Cube)]
pub trait Conv3x3Backend: Backend {
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

/// `log sum_c exp(x_c)` over the classes (dimension 1), kept as a dimension of 1.
fn log_sum_exp_classes<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    let m = B::float_max_dim(x.clone(), 1);
    let e = B::float_exp(B::float_sub(x, m.clone()));
    B::float_add(B::float_log(B::float_sum_dim(e, 1)), m)
}

/// [`Conv3x3Backend::sgd_momentum`] as burn's element-wise operations.
fn sgd_momentum_composed<B: Backend>(
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

/// The window of `skip` that [`Conv3x3Backend::crop_cat`] keeps for an output of `h x w`, as
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

impl Conv3x3Backend for Cube {
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

/// The f32 values of a flex tensor: borrowed from the tensor when it is contiguous (no copy
/// of activation-sized buffers), converted otherwise.
enum Values {
    Tensor(FloatTensor<Flex>),
    Owned(Vec<f32>),
}

impl Values {
    fn get(&self) -> &[f32] {
        match self {
            Self::Tensor(t) => t.as_slice::<f32>().unwrap_or_default(),
            Self::Owned(v) => v,
        }
    }
}

/// The values and the dims of a flex tensor.
fn flex_values<const D: usize>(t: &FloatTensor<Flex>) -> (Values, [usize; D]) {
    let dims: [usize; D] = t.shape().dims();
    let c = t.to_contiguous();
    if c.as_slice::<f32>().is_some() {
        return (Values::Tensor(c), dims);
    }
    let v = c
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap_or_default();
    (Values::Owned(v), dims)
}

fn flex_tensor(values: Vec<f32>, dims: [usize; 4]) -> FloatTensor<Flex> {
    burn::backend::flex::FlexTensor::from_data(TensorData::new(values, dims))
}

/// Four floats aligned to 16 bytes, the alignment burn's `Bytes` requires: a buffer of them
/// becomes a flex tensor without a copy (a `Vec<f32>` is copied into a fresh allocation).
#[derive(Clone, Copy, bytemuck::Zeroable, bytemuck::Pod)]
#[repr(C, align(16))]
struct Quad([f32; 4]);

/// The output of a kernel on flex, written in place and handed to flex as the tensor's storage.
/// Activation-sized outputs were copied twice before (batch assembly and burn's alignment).
struct FlexOut {
    quads: Vec<Quad>,
    len: usize,
}

impl FlexOut {
    /// `len` zeros, written in parallel when large: activation-sized outputs were zeroed on
    /// the calling thread while the other waited (~3 % of a lite 572 px training step).
    fn zeroed(len: usize) -> Self {
        Self {
            quads: filled_in_parallel(len.div_ceil(4), Quad([0.0; 4])),
            len,
        }
    }

    /// `len` values written by `write` (which must write every one of them: `write` gets
    /// uninitialised memory, so no pass zeroes an output that a kernel overwrites).
    fn written(len: usize, write: impl FnOnce(&mut [MaybeUninit<f32>])) -> Self {
        let n = len.div_ceil(4);
        let mut quads: Vec<Quad> = Vec::with_capacity(n);
        let spare = quads.spare_capacity_mut();
        // SAFETY: `n` quads are `4 n` floats with the same layout (`Quad` is `repr(C)`).
        let floats = unsafe {
            std::slice::from_raw_parts_mut(spare.as_mut_ptr().cast::<MaybeUninit<f32>>(), 4 * n)
        };
        let (values, tail) = floats.split_at_mut(len);
        write(values);
        for v in tail {
            v.write(0.0);
        }
        // SAFETY: `write` wrote the first `len` floats (its contract), the loop the rest.
        unsafe { quads.set_len(n) };
        Self { quads, len }
    }

    /// The `len` values.
    fn values(&mut self) -> &mut [f32] {
        &mut bytemuck::cast_slice_mut::<Quad, f32>(&mut self.quads)[..self.len]
    }

    /// The tensor of shape `dims` (`len` values).
    fn into_tensor(mut self, dims: [usize; 4]) -> FloatTensor<Flex> {
        debug_assert_eq!(dims.iter().product::<usize>(), self.len);
        if !self.len.is_multiple_of(4) {
            // The storage must hold exactly the tensor's values: copy this rare odd size.
            let v = self.values().to_vec();
            return flex_tensor(v, dims);
        }
        burn::backend::flex::FlexTensor::new(
            burn::tensor::Bytes::from_elems(self.quads),
            burn::backend::flex::Layout::contiguous(Shape::new(dims)),
            burn::tensor::DType::F32,
        )
    }
}

/// Runs `kernel(item of src, item of the output)` for each of the `n` items of a batch:
/// `src` holds `n` items of equal size, the output is the tensor of shape `dims` (its first
/// dimension `n`).
fn per_item(
    src: &[f32],
    dims: [usize; 4],
    mut kernel: impl FnMut(&[f32], &mut [f32]),
) -> FloatTensor<Flex> {
    // Each item zeroed first: these kernels may leave values (or add into them).
    per_item_written(src, dims, |s, y| kernel(s, zeroed(y)))
}

/// [`per_item`] for kernels that write every value of their output, which starts
/// uninitialised.
fn per_item_written(
    src: &[f32],
    dims: [usize; 4],
    mut kernel: impl FnMut(&[f32], &mut [MaybeUninit<f32>]),
) -> FloatTensor<Flex> {
    let n = dims[0];
    let (per_src, per_out) = (src.len() / n.max(1), dims[1..].iter().product::<usize>());
    let out = FlexOut::written(n * per_out, |y| {
        for (b, item) in y.chunks_exact_mut(per_out.max(1)).enumerate().take(n) {
            kernel(&src[b * per_src..(b + 1) * per_src], item);
        }
    });
    out.into_tensor(dims)
}

/// The sum over the `n` items of a batch of `kernel(item of x, item of grad)`, a weight
/// gradient of `len` values.
fn summed_over_items(
    x: &[f32],
    grad: &[f32],
    n: usize,
    len: usize,
    kernel: impl Fn(&[f32], &[f32]) -> Vec<f32>,
) -> Vec<f32> {
    let (per_x, per_g) = (x.len() / n.max(1), grad.len() / n.max(1));
    let mut parts = (0..n).map(|b| {
        kernel(
            &x[b * per_x..(b + 1) * per_x],
            &grad[b * per_g..(b + 1) * per_g],
        )
    });
    // The first item's gradient is the sum so far: with one item (training's batch of one
    // tile), no zeroed buffer and no pass adding it (serial, 2.4 MB on the deep levels).
    let Some(mut sum) = parts.next() else {
        return vec![0.0f32; len];
    };
    for part in parts {
        for (a, v) in sum.iter_mut().zip(part) {
            *a += v;
        }
    }
    sum
}

/// The flex forward pass, with or without the fused ReLU.
fn flex_conv3x3(
    x: FloatTensor<Flex>,
    weight: FloatTensor<Flex>,
    bias: FloatTensor<Flex>,
    relu: bool,
) -> FloatTensor<Flex> {
    let (x_buf, [n, cin, h, w]) = flex_values::<4>(&x);
    let xv = x_buf.get();
    let (w_buf, [cout, ..]) = flex_values::<4>(&weight);
    let wv = w_buf.get();
    let (b_buf, _) = flex_values::<1>(&bias);
    let bv = b_buf.get();
    let s = ConvShape { cin, cout, h, w };
    per_item_written(xv, [n, cout, s.ho(), s.wo()], |x, y| {
        conv3x3_forward_uninit(x, wv, Some(bv), &s, relu, y)
    })
}

/// `t` as a tensor whose storage holds exactly its `f32` values, contiguous, and that no
/// other tensor shares: itself when it is already so, else a copy.
fn flex_writable(t: FloatTensor<Flex>) -> FloatTensor<Flex> {
    let len = t.shape().num_elements();
    let whole = t.layout().contiguous_offsets() == Some((0, len));
    if whole && t.is_unique() && t.bytes().len() == len * 4 {
        return t;
    }
    burn::backend::flex::FlexTensor::from_data(t.into_data().convert::<f32>())
}

impl Conv3x3Backend for Flex {
    fn weighted_cross_entropy(
        logits: FloatTensor<Self>,
        target: FloatTensor<Self>,
        weights: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let (z, [n, k, h, w]) = flex_values::<4>(&logits);
        let (t, _) = flex_values::<4>(&target);
        let (wt, _) = flex_values::<4>(&weights);
        let loss = weighted_cross_entropy_values(z.get(), t.get(), wt.get(), (n, k, h * w));
        burn::backend::flex::FlexTensor::from_data(TensorData::new(vec![loss], [1]))
    }

    fn weighted_cross_entropy_grad(
        logits: FloatTensor<Self>,
        target: FloatTensor<Self>,
        weights: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let (z, [n, k, h, w]) = flex_values::<4>(&logits);
        let (t, _) = flex_values::<4>(&target);
        let (wt, _) = flex_values::<4>(&weights);
        let (g, _) = flex_values::<1>(&grad);
        let g = g.get().first().copied().unwrap_or(0.0);
        let mut dz = FlexOut::zeroed(n * k * h * w);
        let shape = (n, k, h * w);
        weighted_cross_entropy_grad_values(z.get(), t.get(), wt.get(), shape, g, dz.values());
        dz.into_tensor([n, k, h, w])
    }

    fn sgd_momentum(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        velocity: FloatTensor<Self>,
        lr: f64,
        momentum: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if [&param, &grad, &velocity]
            .iter()
            .any(|t| t.dtype() != burn::tensor::DType::F32)
        {
            return sgd_momentum_composed::<Self>(param, grad, velocity, lr, momentum);
        }
        // One parallel pass, in place: burn's optimiser made five single-threaded passes, two
        // of them into fresh buffers (1.5 ms of a lite 252 px training step, now 0.8 ms).
        let (mut p, mut v) = (flex_writable(param), flex_writable(velocity));
        let g = Values::Tensor(grad.to_contiguous());
        let (pv, vv) = (p.storage_mut::<f32>(), v.storage_mut::<f32>());
        sgd_momentum_in_place(pv, vv, g.get(), lr as f32, momentum as f32);
        (p, v)
    }

    fn dropout_mask(like: FloatTensor<Self>, keep: f64) -> FloatTensor<Self> {
        // One draw from the device's generator seeds a counter-based generator that fills the
        // mask in parallel: burn's Bernoulli sampling ran element by element on one thread
        // (~2 % of a lite 572 px training step, with the other thread waiting).
        let draw = Self::float_random(
            Shape::new([2]),
            burn::tensor::Distribution::Uniform(0.0, 1.0),
            &like.device(),
            burn::tensor::FloatDType::F32,
        );
        let (d, _) = flex_values::<1>(&draw);
        let seed = d
            .get()
            .iter()
            .fold(0u64, |acc, v| (acc << 32) ^ u64::from(v.to_bits()));
        let dims: [usize; 4] = like.shape().dims();
        let mut out = FlexOut::zeroed(dims.iter().product());
        dropout_mask_into(seed, keep, out.values());
        out.into_tensor(dims)
    }

    fn conv3x3(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        flex_conv3x3(x, weight, bias, false)
    }

    fn conv3x3_relu(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        flex_conv3x3(x, weight, bias, true)
    }

    fn relu_bias_grad(
        out: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (o_buf, [n, c, h, w]) = flex_values::<4>(&out);
        let ov = o_buf.get();
        let mut grad = grad;
        let unshared = grad
            .layout()
            .contiguous_offsets()
            .filter(|(a, b)| b - a == ov.len());
        let (g, sums) = match unshared {
            // The gradient is this op's alone (autodiff hands it over): mask it in place
            // instead of allocating and writing an activation-sized buffer.
            Some((start, end)) if grad.try_storage_mut::<f32>().is_some() => {
                let storage = grad.storage_mut::<f32>();
                let sums = relu_bias_grad_in_place(ov, &mut storage[start..end], h * w);
                (grad, sums)
            }
            _ => {
                let (g_buf, _) = flex_values::<4>(&grad);
                // A copy in one (parallel) pass, not zeroed first.
                let mut dst = FlexOut::written(ov.len(), |d| copy_into(g_buf.get(), d));
                let sums = relu_bias_grad_in_place(ov, dst.values(), h * w);
                (dst.into_tensor([n, c, h, w]), sums)
            }
        };
        // Per plane to per channel: the sum over the batch.
        let mut db = vec![0.0f32; c];
        for (i, v) in sums.iter().enumerate() {
            db[i % c.max(1)] += v;
        }
        let db = burn::backend::flex::FlexTensor::from_data(TensorData::new(db, [c]));
        (g, db)
    }

    fn up2x2(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let (x_buf, [n, cin, h, w]) = flex_values::<4>(&x);
        let xv = x_buf.get();
        let (w_buf, [_, cout, ..]) = flex_values::<4>(&weight);
        let wv = w_buf.get();
        let (b_buf, _) = flex_values::<1>(&bias);
        let bv = b_buf.get();
        let s = UpShape { cin, cout, h, w };
        per_item(xv, [n, cout, 2 * h, 2 * w], |x, y| {
            up2x2_forward_into(x, wv, Some(bv), &s, y)
        })
    }

    fn up2x2_input_grad(weight: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        let (w_buf, [cin, cout, ..]) = flex_values::<4>(&weight);
        let wv = w_buf.get();
        let (g_buf, [n, _, h2, w2]) = flex_values::<4>(&grad);
        let gv = g_buf.get();
        let s = UpShape {
            cin,
            cout,
            h: h2 / 2,
            w: w2 / 2,
        };
        per_item(gv, [n, cin, s.h, s.w], |g, dx| {
            up2x2_input_grad_into(g, wv, &s, dx)
        })
    }

    fn up2x2_weight_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let (x_buf, [n, cin, h, w]) = flex_values::<4>(&x);
        let xv = x_buf.get();
        let [_, cout, ..]: [usize; 4] = weight.shape().dims();
        let (g_buf, _) = flex_values::<4>(&grad);
        let gv = g_buf.get();
        let s = UpShape { cin, cout, h, w };
        let dw = summed_over_items(xv, gv, n, cin * cout * 4, |x, g| {
            up2x2_weight_grad(x, g, &s)
        });
        flex_tensor(dw, [cin, cout, 2, 2])
    }

    fn conv3x3_input_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let [n, cin, h, w]: [usize; 4] = x.shape().dims();
        let (w_buf, [cout, ..]) = flex_values::<4>(&weight);
        let wv = w_buf.get();
        let (g_buf, _) = flex_values::<4>(&grad);
        let gv = g_buf.get();
        let s = ConvShape { cin, cout, h, w };
        per_item_written(gv, [n, cin, h, w], |g, dx| {
            conv3x3_input_grad_uninit(g, wv, &s, dx)
        })
    }

    fn conv3x3_weight_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let (x_buf, [n, cin, h, w]) = flex_values::<4>(&x);
        let xv = x_buf.get();
        let [cout, ..]: [usize; 4] = weight.shape().dims();
        let (g_buf, _) = flex_values::<4>(&grad);
        let gv = g_buf.get();
        let s = ConvShape { cin, cout, h, w };
        let dw = summed_over_items(xv, gv, n, cout * cin * 9, |x, g| {
            conv3x3_weight_grad(x, g, &s)
        });
        flex_tensor(dw, [cout, cin, 3, 3])
    }

    fn pool2x2(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let (x_buf, [n, c, h, w]) = flex_values::<4>(&x);
        let mut out = FlexOut::zeroed(n * c * (h / 2) * (w / 2));
        pool2x2_forward_into(x_buf.get(), n * c, h, w, out.values());
        out.into_tensor([n, c, h / 2, w / 2])
    }

    fn pool2x2_grad(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        let (x_buf, [n, c, h, w]) = flex_values::<4>(&x);
        let (g_buf, _) = flex_values::<4>(&grad);
        let mut out = FlexOut::zeroed(n * c * h * w);
        pool2x2_backward_into(x_buf.get(), g_buf.get(), n * c, h, w, out.values());
        out.into_tensor([n, c, h, w])
    }

    fn pool2x2_grad_add(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        acc: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        if acc.dtype() != burn::tensor::DType::F32 {
            return Self::float_add(Self::pool2x2_grad(x, grad), acc);
        }
        let (x_buf, [n, c, h, w]) = flex_values::<4>(&x);
        let (g_buf, _) = flex_values::<4>(&grad);
        let mut acc = flex_writable(acc);
        let dx = acc.storage_mut::<f32>();
        pool2x2_backward_add_into(x_buf.get(), g_buf.get(), n * c, h, w, dx);
        acc
    }

    fn crop_cat(skip: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        let (s_buf, [n, cs, sh, sw]) = flex_values::<4>(&skip);
        let (u_buf, [_, cu, h, w]) = flex_values::<4>(&up);
        let (sv, uv) = (s_buf.get(), u_buf.get());
        let crop = Crop {
            full: (sh, sw),
            window: (h, w),
        };
        let (per_s, per_u) = (cs * h * w, cu * h * w);
        // Every value is written: the skip connection's window, then `up`.
        let out = FlexOut::written(n * (per_s + per_u), |y| {
            for (b, item) in y.chunks_exact_mut((per_s + per_u).max(1)).enumerate() {
                let (to_s, to_u) = item.split_at_mut(per_s);
                crop_into(&sv[b * cs * sh * sw..(b + 1) * cs * sh * sw], &crop, to_s);
                copy_into(&uv[b * per_u..(b + 1) * per_u], to_u);
            }
        });
        out.into_tensor([n, cs + cu, h, w])
    }

    fn crop_cat_grad(
        skip: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let [n, cs, sh, sw]: [usize; 4] = skip.shape().dims();
        let (g_buf, [_, c, h, w]) = flex_values::<4>(&grad);
        let gv = g_buf.get();
        let crop = Crop {
            full: (sh, sw),
            window: (h, w),
        };
        let (per_s, per_g) = (cs * sh * sw, c * h * w);
        // Every value written (the zeros around the window too): not zeroed first.
        let ds = FlexOut::written(n * per_s, |d| {
            for (b, item) in d.chunks_exact_mut(per_s.max(1)).enumerate() {
                uncrop_into(&gv[b * per_g..b * per_g + cs * h * w], &crop, item);
            }
        });
        // `up`'s gradient is the channels after the skip's: a view of `grad` (contiguous for a
        // batch of one), not a copy.
        let du = Self::float_slice(grad, &[0..n, cs..c, 0..h, 0..w].map(Slice::from));
        (ds.into_tensor([n, cs, sh, sw]), du)
    }
}

/// The gradient of a per-channel bias: the output gradient summed over batch and space.
fn bias_grad<B: Backend>(grad: FloatTensor<B>) -> FloatTensor<B> {
    let [n, c, h, wd]: [usize; 4] = grad.shape().dims();
    let g = B::float_reshape(grad, Shape::new([n, c, h * wd]));
    let g = B::float_sum_dim(B::float_sum_dim(g, 2), 0);
    B::float_reshape(g, Shape::new([c]))
}

/// The weight and input gradient kernels of an op of `(x, weight, bias)`, each called as
/// `(x, weight, output gradient)`.
type GradKernels<B> = (Forward3<B>, Forward3<B>);

/// Backward of an op `f(x, w) + b` with a per-channel bias (the 3x3 convolution, the
/// up-convolution): its `(weight, input)` gradient kernels. With the ReLU's output in its
/// state (the fused convolution), the gradient goes through the ReLU first, and that pass also
/// gives the bias gradient. That output is also the next layer's input, so no pre-activation
/// map is stored. Only the gradients of tracked parents are computed.
#[derive(Debug)]
struct LinearBackward<B: Backend> {
    kernels: GradKernels<B>,
}

impl<B: Conv3x3Backend> Backward<B, 3> for LinearBackward<B> {
    type State = (NodeId, NodeId, Option<FloatTensor<B>>);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let grad = grads.consume::<B>(&ops.node);
        let (x_state, w_state, relu_out) = ops.state;
        let x: FloatTensor<B> = checkpointer.retrieve_node_output(x_state);
        let w: FloatTensor<B> = checkpointer.retrieve_node_output(w_state);
        let (grad, bias) = match relu_out {
            Some(out) => {
                let (g, db) = B::relu_bias_grad(out, grad);
                (g, Some(db))
            }
            None => (grad, None),
        };
        let [node_x, node_w, node_b] = ops.parents.map(|p| p.map(|n| n.id));
        let (weight_grad, input_grad) = self.kernels;
        if let Some(node) = node_b {
            let db = bias.unwrap_or_else(|| bias_grad::<B>(grad.clone()));
            grads.register::<B>(node, db);
        }
        if let Some(node) = node_w {
            grads.register::<B>(node, weight_grad(x.clone(), w.clone(), grad.clone()));
        }
        if let Some(node) = node_x {
            grads.register::<B>(node, input_grad(x, w, grad));
        }
    }
}

/// The gradient that crop-and-concat's backward computes for its skip connection, handed to
/// the backward of the pooling that reads the same tensor (each level's last activation feeds
/// both). Autodiff would add the two full-size gradients on one thread after the pooling's
/// had been written to a fresh buffer; handed over, the pooling adds its gradient into the
/// skip connection's in one parallel pass (~0.5 ms of a lite 252 px step).
///
/// The skip connection's gradient is computed first (the decoder comes later in the graph):
/// it is left here, and the pooling's backward takes it. Should the pooling's run first, it
/// marks the slot and crop-and-concat registers its gradient as usual.
#[derive(Debug)]
enum Handover<T> {
    Waiting,
    Skip(T),
    PoolDone,
}

/// A [`Handover`] shared by the two ops' backward states.
struct SkipSlot<B: Backend>(Arc<Mutex<Handover<FloatTensor<B>>>>);

impl<B: Backend> Clone for SkipSlot<B> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<B: Backend> std::fmt::Debug for SkipSlot<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SkipSlot")
    }
}

/// Slots that poolings offered for their input, not yet claimed by a crop-and-concat of the
/// same tensor, by the input's node (at most [`OFFERED_MAX`]; node ids are never reused).
type Offered = Vec<(NodeId, Box<dyn Any + Send>)>;
static OFFERED: Mutex<Offered> = Mutex::new(Vec::new());
/// More than a U-Net's levels: older offers (a pooling whose input had no crop) are dropped.
const OFFERED_MAX: usize = 32;

impl<B: Backend> SkipSlot<B> {
    /// A new slot of a pooling of tensor `input`, offered to a later crop of it.
    fn offer(input: NodeId) -> Self {
        let slot = Self(Arc::new(Mutex::new(Handover::Waiting)));
        let mut offered = OFFERED.lock().unwrap_or_else(PoisonError::into_inner);
        if offered.len() >= OFFERED_MAX {
            offered.remove(0);
        }
        offered.push((input, Box::new(slot.clone())));
        slot
    }

    /// The slot a pooling of tensor `skip` offered, if any.
    fn claim(skip: NodeId) -> Option<Self> {
        let mut offered = OFFERED.lock().unwrap_or_else(PoisonError::into_inner);
        let at = offered.iter().position(|(id, _)| *id == skip)?;
        offered.remove(at).1.downcast::<Self>().ok().map(|b| *b)
    }

    fn lock(&self) -> MutexGuard<'_, Handover<FloatTensor<B>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Leaves the skip connection's gradient for the pooling; gives it back if the pooling's
    /// backward has already run.
    fn deposit(&self, grad: FloatTensor<B>) -> Option<FloatTensor<B>> {
        let mut h = self.lock();
        match *h {
            Handover::PoolDone => Some(grad),
            _ => {
                *h = Handover::Skip(grad);
                None
            }
        }
    }

    /// The skip connection's gradient if it was left here; either way later deposits are
    /// refused.
    fn take(&self) -> Option<FloatTensor<B>> {
        match std::mem::replace(&mut *self.lock(), Handover::PoolDone) {
            Handover::Skip(g) => Some(g),
            _ => None,
        }
    }
}

/// Backward of the 2x2 max pooling; the state is the checkpointed input and the slot of the
/// skip connection's gradient ([`SkipSlot`]).
#[derive(Debug)]
struct Pool2x2Backward;

impl<B: Conv3x3Backend> Backward<B, 1> for Pool2x2Backward {
    type State = (NodeId, SkipSlot<B>);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let grad = grads.consume::<B>(&ops.node);
        let (x_state, slot) = ops.state;
        let x: FloatTensor<B> = checkpointer.retrieve_node_output(x_state);
        let [parent] = ops.parents;
        let skip = slot.take();
        if let Some(node) = parent {
            let dx = match skip {
                Some(acc) => B::pool2x2_grad_add(x, grad, acc),
                None => B::pool2x2_grad(x, grad),
            };
            grads.register::<B>(node.id, dx);
        }
    }
}

/// Backward of the crop-and-concat; the state is the checkpointed skip connection (for its
/// shape: the crop's gradient is zero outside the window).
#[derive(Debug)]
struct CropCatBackward;

impl<B: Conv3x3Backend> Backward<B, 2> for CropCatBackward {
    type State = (NodeId, Option<SkipSlot<B>>);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let grad = grads.consume::<B>(&ops.node);
        let (skip_state, slot) = ops.state;
        let skip: FloatTensor<B> = checkpointer.retrieve_node_output(skip_state);
        let (ds, du) = B::crop_cat_grad(skip, grad);
        let [node_s, node_u] = ops.parents.map(|p| p.map(|n| n.id));
        if let Some(node) = node_s {
            // To the pooling of the same tensor, which adds its own ([`SkipSlot`]).
            let unclaimed = match &slot {
                Some(slot) => slot.deposit(ds),
                None => Some(ds),
            };
            if let Some(ds) = unclaimed {
                grads.register::<B>(node, ds);
            }
        }
        if let Some(node) = node_u {
            grads.register::<B>(node, du);
        }
    }
}

/// Backward of the loss; the state is the checkpointed logits, the target and the weights.
#[derive(Debug)]
struct LossBackward;

impl<B: Conv3x3Backend> Backward<B, 1> for LossBackward {
    type State = (NodeId, FloatTensor<B>, FloatTensor<B>);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let grad = grads.consume::<B>(&ops.node);
        let (ls, target, weights) = ops.state;
        let logits: FloatTensor<B> = checkpointer.retrieve_node_output(ls);
        let [parent] = ops.parents;
        if let Some(node) = parent {
            let dz = B::weighted_cross_entropy_grad(logits, target, weights, grad);
            grads.register::<B>(node.id, dz);
        }
    }
}

/// The forward pass of an op of `(x, weight, bias)` on the inner backend.
type Forward3<B> = fn(FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) -> FloatTensor<B>;

/// Runs `forward` under autodiff, with `kernels` for its backward ([`LinearBackward`]), which
/// gets `x` and `weight` as checkpoints and, with `keep_output`, the output itself.
fn record3<B, C>(
    kernels: GradKernels<B>,
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    bias: FloatTensor<Autodiff<B, C>>,
    forward: Forward3<B>,
    keep_output: bool,
) -> FloatTensor<Autodiff<B, C>>
where
    B: Conv3x3Backend,
    C: CheckpointStrategy,
{
    match (LinearBackward { kernels })
        .prepare::<C>([x.node(), weight.node(), bias.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let xs = prep.checkpoint(&x);
            let ws = prep.checkpoint(&weight);
            let out = forward(
                x.into_primitive(),
                weight.into_primitive(),
                bias.into_primitive(),
            );
            let kept = keep_output.then(|| out.clone());
            prep.finish((xs, ws, kept), out)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(
            x.into_primitive(),
            weight.into_primitive(),
            bias.into_primitive(),
        )),
    }
}

impl<B: Conv3x3Backend, C: CheckpointStrategy> Conv3x3Backend for Autodiff<B, C> {
    fn weighted_cross_entropy(
        logits: FloatTensor<Self>,
        target: FloatTensor<Self>,
        weights: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let (t, w) = (target.into_primitive(), weights.into_primitive());
        match LossBackward
            .prepare::<C>([logits.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let ls = prep.checkpoint(&logits);
                let loss = B::weighted_cross_entropy(logits.into_primitive(), t.clone(), w.clone());
                prep.finish((ls, t, w), loss)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::weighted_cross_entropy(logits.into_primitive(), t, w))
            }
        }
    }

    fn weighted_cross_entropy_grad(
        _logits: FloatTensor<Self>,
        _target: FloatTensor<Self>,
        _weights: FloatTensor<Self>,
        _grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        unreachable!("gradients of gradients are not used by unet-studio")
    }

    fn sgd_momentum(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        velocity: FloatTensor<Self>,
        lr: f64,
        momentum: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (p, v) = B::sgd_momentum(
            param.into_primitive(),
            grad.into_primitive(),
            velocity.into_primitive(),
            lr,
            momentum,
        );
        let untracked = <Self as burn::backend::AutodiffBackend>::from_inner;
        (untracked(p), untracked(v))
    }

    fn dropout_mask(like: FloatTensor<Self>, keep: f64) -> FloatTensor<Self> {
        <Self as burn::backend::AutodiffBackend>::from_inner(B::dropout_mask(
            like.into_primitive(),
            keep,
        ))
    }

    fn conv3x3(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let kernels: GradKernels<B> = (B::conv3x3_weight_grad, B::conv3x3_input_grad);
        record3::<B, C>(kernels, x, weight, bias, B::conv3x3, false)
    }

    fn conv3x3_relu(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let kernels: GradKernels<B> = (B::conv3x3_weight_grad, B::conv3x3_input_grad);
        record3::<B, C>(kernels, x, weight, bias, B::conv3x3_relu, true)
    }

    fn relu_bias_grad(
        _out: FloatTensor<Self>,
        _grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        unreachable!("only used inside the backward pass, on the inner backend")
    }

    fn up2x2(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let kernels: GradKernels<B> = (B::up2x2_weight_grad, |_x, w, g| B::up2x2_input_grad(w, g));
        record3::<B, C>(kernels, x, weight, bias, B::up2x2, false)
    }

    fn up2x2_input_grad(_w: FloatTensor<Self>, _g: FloatTensor<Self>) -> FloatTensor<Self> {
        unreachable!("gradients of gradients are not used by unet-studio")
    }

    fn up2x2_weight_grad(
        _x: FloatTensor<Self>,
        _w: FloatTensor<Self>,
        _g: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        unreachable!("gradients of gradients are not used by unet-studio")
    }

    fn conv3x3_input_grad(
        _x: FloatTensor<Self>,
        _w: FloatTensor<Self>,
        _g: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        unreachable!("gradients of gradients are not used by unet-studio")
    }

    fn conv3x3_weight_grad(
        _x: FloatTensor<Self>,
        _w: FloatTensor<Self>,
        _g: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        unreachable!("gradients of gradients are not used by unet-studio")
    }

    fn pool2x2(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match Pool2x2Backward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let xs = prep.checkpoint(&x);
                let slot = SkipSlot::offer(x.id());
                prep.finish((xs, slot), B::pool2x2(x.into_primitive()))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::pool2x2(x.into_primitive())),
        }
    }

    fn pool2x2_grad(_x: FloatTensor<Self>, _g: FloatTensor<Self>) -> FloatTensor<Self> {
        unreachable!("gradients of gradients are not used by unet-studio")
    }

    fn pool2x2_grad_add(
        _x: FloatTensor<Self>,
        _g: FloatTensor<Self>,
        _acc: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        unreachable!("gradients of gradients are not used by unet-studio")
    }

    fn crop_cat(skip: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        match CropCatBackward
            .prepare::<C>([skip.node(), up.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let ss = prep.checkpoint(&skip);
                let slot = SkipSlot::claim(skip.id());
                prep.finish(
                    (ss, slot),
                    B::crop_cat(skip.into_primitive(), up.into_primitive()),
                )
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::crop_cat(skip.into_primitive(), up.into_primitive()))
            }
        }
    }

    fn crop_cat_grad(
        _skip: FloatTensor<Self>,
        _grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        unreachable!("gradients of gradients are not used by unet-studio")
    }
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
/// ([`Conv3x3Backend::dropout_mask`]).
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

/// `v = momentum v + g`, `p -= lr v` over equal-length slices, in parallel chunks.
pub fn sgd_momentum_in_place(p: &mut [f32], v: &mut [f32], g: &[f32], lr: f32, momentum: f32) {
    const CHUNK: usize = 1 << 14;
    let step = |((p, v), g): ((&mut [f32], &mut [f32]), &[f32])| {
        for ((p, v), g) in p.iter_mut().zip(v.iter_mut()).zip(g) {
            *v = momentum * *v + g;
            *p -= lr * *v;
        }
    };
    if p.len() <= CHUNK {
        // Biases and small kernels: a parallel region would cost more than the pass.
        return step(((p, v), g));
    }
    p.par_chunks_mut(CHUNK)
        .zip(v.par_chunks_mut(CHUNK))
        .zip(g.par_chunks(CHUNK))
        .for_each(step);
}

/// Fills `mask` with `1 / keep` where a counter-based generator (SplitMix64 of `seed` and the
/// index) draws a uniform value below `keep`, else 0: the same mask for the same seed, however
/// the work is split.
pub fn dropout_mask_into(seed: u64, keep: f64, mask: &mut [f32]) {
    const CHUNK: usize = 1 << 14;
    let scale = (1.0 / keep) as f32;
    // A 24-bit uniform draw is kept when below this.
    let threshold = (keep * f64::from(1u32 << 24)).round() as u64;
    mask.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            for (i, v) in chunk.iter_mut().enumerate() {
                let mut z =
                    seed.wrapping_add(((c * CHUNK + i) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                *v = if (z >> 40) < threshold { scale } else { 0.0 };
            }
        });
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

/// A 3x3 convolution layer with the parameter names of burn's `Conv2d` (`weight`, `bias`),
/// running the extension for valid padding and burn's convolution for same padding.
#[derive(Module, Debug)]
pub struct Conv3x3 {
    /// `[Cout, Cin, 3, 3]`.
    pub weight: Param<Tensor<4>>,
    /// `[Cout]`.
    pub bias: Param<Tensor<1>>,
    /// Zero padding of 1 (same) instead of none (valid).
    pub same: bool,
}

impl Conv3x3 {
    /// He-initialised layer: weights ~ N(0, 2 / (9 Cin)), bias 0.
    pub fn new(cin: usize, cout: usize, same: bool, device: &Device) -> Self {
        let std = (2.0 / (9 * cin) as f64).sqrt();
        Self {
            weight: Param::from_tensor(Tensor::random(
                [cout, cin, 3, 3],
                burn::tensor::Distribution::Normal(0.0, std),
                device,
            )),
            bias: Param::from_tensor(Tensor::zeros([cout], device)),
            same,
        }
    }

    /// `relu(forward(x))`, fused into the convolution for valid padding.
    pub fn forward_relu(&self, x: Tensor<4>) -> Tensor<4> {
        if self.same {
            burn::tensor::activation::relu(self.forward(x))
        } else {
            conv3x3_relu(x, self.weight.val(), self.bias.val())
        }
    }

    /// `[N, Cin, H, W] -> [N, Cout, H - 2, W - 2]` (valid) or `[N, Cout, H, W]` (same).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        if self.same {
            burn::tensor::module::conv2d(
                x,
                self.weight.val(),
                Some(self.bias.val()),
                ConvOptions::new([1, 1], [1, 1], [1, 1], 1),
            )
        } else {
            conv3x3(x, self.weight.val(), self.bias.val())
        }
    }
}
