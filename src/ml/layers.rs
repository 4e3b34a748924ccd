//! The U-Net's 3x3 convolution as a burn module, with the parameter names of burn's `Conv2d`.

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::ops::ConvOptions;

use super::ops::{conv3x3, conv3x3_relu};

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
