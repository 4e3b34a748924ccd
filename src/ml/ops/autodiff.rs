//! [`UNetOps`] under burn's autodiff: each operation records a hand-written backward that calls
//! the inner backend's gradient operations. A skip connection's gradient is handed from the
//! crop-and-concatenate backward to the pooling backward of the same map ([`SkipSlot`]) so it
//! is added in place instead of summed by autodiff.

use burn::backend::Backend;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::tensor::FloatTensor;
use std::any::Any;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{UNetOps, bias_grad};

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

impl<B: UNetOps> Backward<B, 3> for LinearBackward<B> {
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

impl<B: UNetOps> Backward<B, 1> for Pool2x2Backward {
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

impl<B: UNetOps> Backward<B, 2> for CropCatBackward {
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

impl<B: UNetOps> Backward<B, 1> for LossBackward {
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
    B: UNetOps,
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

impl<B: UNetOps, C: CheckpointStrategy> UNetOps for Autodiff<B, C> {
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
