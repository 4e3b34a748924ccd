//! [`UNetOps`] on burn's `flex` CPU backend: the tensors' values handed to the plain kernels of
//! [`crate::kernels`], written in place where no other tensor shares them.

use burn::backend::ops::FloatTensorOps as _;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Flex, TensorMetadata};
use burn::prelude::*;
use burn::tensor::Slice;
use std::mem::MaybeUninit;

use super::{UNetOps, sgd_momentum_composed};
use crate::kernels::common::{ConvShape, filled_in_parallel, zeroed};
use crate::kernels::conv3x3::{
    conv3x3_forward_uninit, conv3x3_input_grad_uninit, conv3x3_weight_grad,
};
use crate::kernels::crop::{Crop, copy_into, crop_into, uncrop_into};
use crate::kernels::cross_entropy::{
    weighted_cross_entropy_grad_values, weighted_cross_entropy_values,
};
use crate::kernels::dropout::dropout_mask_into;
use crate::kernels::pool::{
    pool2x2_backward_add_into, pool2x2_backward_into, pool2x2_forward_into,
};
use crate::kernels::relu::relu_bias_grad_in_place;
use crate::kernels::sgd::sgd_momentum_in_place;
use crate::kernels::upconv::{
    UpShape, up2x2_forward_into, up2x2_input_grad_into, up2x2_weight_grad,
};

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

impl UNetOps for Flex {
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
