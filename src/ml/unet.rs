//! The U-Net of Ronneberger et al. (2015): contracting path of 3x3 convolutions + ReLU and 2x2
//! max-pooling, expanding path of 2x2 up-convolutions, crop-and-concat and 3x3 convolutions,
//! final 1x1 convolution to the class scores.

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Initializer};
use burn::prelude::*;
use burn::tensor::activation::relu;

use crate::ml::layers::Conv3x3;
use crate::preprocess::{ConvPadding, TileGeometry};

/// Network hyper-parameters. Saved next to every checkpoint.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UNetConfig {
    /// Input channels (1 for grey microscopy).
    pub in_channels: usize,
    /// Output classes (class ids 1..=classes of the label images).
    pub classes: usize,
    /// Number of 2x2 poolings (paper: 4).
    pub depth: usize,
    /// Channels of the first level, doubled per level (paper: 64).
    pub base_channels: usize,
    /// Convolution padding (paper: valid).
    pub padding: ConvPadding,
    /// Dropout probability at the end of the contracting path (after the bottleneck).
    pub dropout: f64,
    /// Batch normalisation after every 3x3 convolution (not in the paper).
    pub batch_norm: bool,
    /// What the classes are (class k at index k - 1, for example "membrane", "cell"); empty
    /// when not known. The app names a new stack's classes after them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub class_names: Vec<String>,
    /// Which channels of a stack feed the network, in order (0-based; `in_channels` of them);
    /// empty: the first `in_channels` (a grey network and grey stacks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub input_channels: Vec<usize>,
}

/// What a layer does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerKind {
    /// 3x3 convolution + ReLU.
    Conv3x3,
    /// 2x2 max-pooling.
    MaxPool,
    /// 2x2 stride-2 up-convolution.
    UpConv,
    /// Crop of the skip connection and concatenation.
    Concat,
    /// The final 1x1 convolution to class scores.
    Conv1x1,
}

/// One layer of the network on a given tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layer {
    /// What it does.
    pub kind: LayerKind,
    /// Edge of its (square) output in pixels.
    pub size: usize,
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
}

/// Estimated memory of one forward (or training) pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// Everything alive at the peak.
    pub total_bytes: u64,
    /// The largest single feature map (one GPU buffer).
    pub largest_tensor_bytes: u64,
}

/// Named configurations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Preset {
    /// The paper's network: depth 4, 64 base channels, valid convolutions, no batch norm.
    Paper,
    /// The same shape with 16 base channels (16x fewer FLOPs), for CPUs and quick tests.
    Lite,
}

impl std::str::FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "paper" => Ok(Self::Paper),
            "lite" => Ok(Self::Lite),
            other => Err(format!("unknown preset '{other}': use paper or lite")),
        }
    }
}

impl std::fmt::Display for Preset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Paper => "paper",
            Self::Lite => "lite",
        })
    }
}

impl UNetConfig {
    /// The configuration of a preset with `classes` output classes.
    pub fn preset(preset: Preset, classes: usize) -> Self {
        Self {
            in_channels: 1,
            classes,
            depth: 4,
            base_channels: match preset {
                Preset::Paper => 64,
                Preset::Lite => 16,
            },
            padding: ConvPadding::Valid,
            dropout: 0.5,
            batch_norm: false,
            class_names: Vec::new(),
            input_channels: Vec::new(),
        }
    }

    /// The same network fed by the stack channels `channels` (0-based, in order; 1 to 4 of
    /// them).
    pub fn with_input_channels(mut self, channels: Vec<usize>) -> Self {
        self.in_channels = channels.len();
        self.input_channels = channels;
        self
    }

    /// The stack channels that feed the network, in order.
    pub fn input_channel_list(&self) -> Vec<usize> {
        if self.input_channels.is_empty() {
            (0..self.in_channels).collect()
        } else {
            self.input_channels.clone()
        }
    }

    /// Checks every field against what the network can be built and run with (a crafted
    /// or damaged config must give an error, not a panic or an allocation without bound).
    pub fn validate(&self) -> Result<(), String> {
        let check = |ok: bool, what: String| if ok { Ok(()) } else { Err(what) };
        check(
            (1..=4).contains(&self.in_channels),
            format!("in_channels {} (1 to 4)", self.in_channels),
        )?;
        check(
            self.input_channels.is_empty() || self.input_channels.len() == self.in_channels,
            format!(
                "input_channels {:?} (in_channels {} of them)",
                self.input_channels, self.in_channels
            ),
        )?;
        check(
            self.input_channels.iter().all(|&c| c < 64),
            format!("input_channels {:?} (0 to 63)", self.input_channels),
        )?;
        check(
            (2..=255).contains(&self.classes),
            format!("classes {} (2 to 255)", self.classes),
        )?;
        check(
            (1..=6).contains(&self.depth),
            format!("depth {} (1 to 6)", self.depth),
        )?;
        check(
            (1..=128).contains(&self.base_channels),
            format!("base_channels {} (1 to 128)", self.base_channels),
        )?;
        check(
            self.dropout.is_finite() && (0.0..1.0).contains(&self.dropout),
            format!("dropout {} (0 to below 1)", self.dropout),
        )?;
        check(
            self.class_names.len() <= self.classes,
            format!(
                "{} class names for {} classes",
                self.class_names.len(),
                self.classes
            ),
        )
    }

    /// The tile geometry of this network.
    pub fn geometry(&self) -> TileGeometry {
        TileGeometry {
            depth: self.depth,
            padding: self.padding,
        }
    }

    /// Number of convolution layers (23 for the paper's net).
    pub fn conv_layers(&self) -> usize {
        // 2 per level down, 2 at the bottom, 3 per level up (up-conv + 2), 1 final.
        2 * self.depth + 2 + 3 * self.depth + 1
    }

    fn channels(&self, level: usize) -> usize {
        self.base_channels << level
    }

    /// The layers of one forward pass on an `input x input` tile (batch 1), in order, or
    /// `None` when the tile is not valid for this network.
    pub fn layers(&self, input: usize) -> Option<Vec<Layer>> {
        let shrink = if self.padding == ConvPadding::Valid {
            2
        } else {
            0
        };
        let mut out = Vec::new();
        let mut s = input;
        let mut cin = self.in_channels;
        let conv3 = |s: &mut usize, cin: usize, cout: usize, out: &mut Vec<Layer>| {
            *s = s.checked_sub(shrink)?;
            out.push(Layer {
                kind: LayerKind::Conv3x3,
                size: *s,
                cin,
                cout,
            });
            Some(())
        };
        for l in 0..self.depth {
            let c = self.channels(l);
            conv3(&mut s, cin, c, &mut out)?;
            conv3(&mut s, c, c, &mut out)?;
            if !s.is_multiple_of(2) {
                return None;
            }
            s /= 2;
            out.push(Layer {
                kind: LayerKind::MaxPool,
                size: s,
                cin: c,
                cout: c,
            });
            cin = c;
        }
        let c = self.channels(self.depth);
        conv3(&mut s, cin, c, &mut out)?;
        conv3(&mut s, c, c, &mut out)?;
        let mut cin = c;
        for l in (0..self.depth).rev() {
            let c = self.channels(l);
            s *= 2;
            out.push(Layer {
                kind: LayerKind::UpConv,
                size: s,
                cin,
                cout: c,
            });
            out.push(Layer {
                kind: LayerKind::Concat,
                size: s,
                cin: c,
                cout: 2 * c,
            });
            conv3(&mut s, 2 * c, c, &mut out)?;
            conv3(&mut s, c, c, &mut out)?;
            cin = c;
        }
        out.push(Layer {
            kind: LayerKind::Conv1x1,
            size: s,
            cin,
            cout: self.classes,
        });
        Some(out)
    }

    /// Multiply-add count x 2 of one forward pass on an `input x input` tile (batch 1).
    pub fn forward_flops(&self, input: usize) -> Option<f64> {
        let layers = self.layers(input)?;
        Some(
            layers
                .iter()
                .map(|l| {
                    let taps = match l.kind {
                        LayerKind::Conv3x3 => 9.0,
                        // Up-convolution 2x2 stride 2: one tap per input channel per output.
                        LayerKind::UpConv | LayerKind::Conv1x1 => 1.0,
                        LayerKind::MaxPool | LayerKind::Concat => 0.0,
                    };
                    2.0 * (l.size * l.size) as f64 * (l.cin * l.cout) as f64 * taps
                })
                .sum(),
        )
    }

    /// Number of trainable parameters.
    pub fn parameter_count(&self) -> usize {
        // A 3x3 convolution with bias (and batch norm's scale, shift and running statistics,
        // which burn counts as parameters).
        let conv3 =
            |cin: usize, c: usize| 9 * cin * c + c + if self.batch_norm { 4 * c } else { 0 };
        let mut n = 0;
        let mut cin = self.in_channels;
        for l in 0..=self.depth {
            let c = self.channels(l);
            n += conv3(cin, c) + conv3(c, c);
            cin = c;
        }
        for l in (0..self.depth).rev() {
            let c = self.channels(l);
            n += 4 * cin * c + c + conv3(2 * c, c) + conv3(c, c);
            cin = c;
        }
        n + cin * self.classes + self.classes
    }

    /// Estimated device memory of one pass on an `input x input` tile, or `None` for an
    /// invalid tile. Training keeps every feature map for the backward pass and about as
    /// much again in gradients and temporaries (2 copies counted), plus the largest
    /// unfolded 3x3 input of the CPU kernels and four copies of the parameters (weights,
    /// gradients, two optimiser moments); inference keeps the skip connections, the live
    /// maps and the unfolded input.
    pub fn memory_estimate(&self, input: usize, training: bool) -> Option<MemoryEstimate> {
        let layers = self.layers(input)?;
        let maps: Vec<usize> = layers.iter().map(|l| l.size * l.size * l.cout).collect();
        let unfold = layers
            .iter()
            .filter(|l| l.kind == LayerKind::Conv3x3)
            .map(|l| l.size * l.size * 9 * l.cin)
            .max()
            .unwrap_or(0);
        let largest_map = maps.iter().copied().max().unwrap_or(0);
        let floats = if training {
            2 * maps.iter().sum::<usize>() + unfold + 4 * self.parameter_count()
        } else {
            let skips: usize = layers
                .iter()
                .zip(&maps)
                .filter(|(l, _)| l.kind == LayerKind::MaxPool)
                .map(|(_, m)| 4 * m)
                .sum();
            skips + 3 * largest_map + unfold + self.parameter_count()
        };
        Some(MemoryEstimate {
            total_bytes: 4 * floats as u64,
            largest_tensor_bytes: 4 * largest_map as u64,
        })
    }

    /// Builds the network with He initialisation: weights ~ N(0, 2 / N), N the number of
    /// incoming connections of a unit (9 * in-channels for a 3x3 convolution, in-channels for
    /// the 2x2 stride-2 up-convolution, whose outputs each see one tap per channel); biases 0.
    pub fn init(&self, device: &Device) -> UNet {
        let same = self.padding == ConvPadding::Same;
        let conv3 = |cin: usize, cout: usize| Conv3x3::new(cin, cout, same, device);
        let block = |cin: usize, cout: usize| DoubleConv {
            conv1: conv3(cin, cout),
            norm1: self
                .batch_norm
                .then(|| BatchNormConfig::new(cout).init(device)),
            conv2: conv3(cout, cout),
            norm2: self
                .batch_norm
                .then(|| BatchNormConfig::new(cout).init(device)),
        };
        let mut down = Vec::new();
        let mut cin = self.in_channels;
        for l in 0..self.depth {
            down.push(block(cin, self.channels(l)));
            cin = self.channels(l);
        }
        let bottom = block(cin, self.channels(self.depth));
        let mut up = Vec::new();
        let mut up_blocks = Vec::new();
        for l in (0..self.depth).rev() {
            let (cin, cout) = (self.channels(l + 1), self.channels(l));
            let mut t = ConvTranspose2dConfig::new([cin, cout], [2, 2])
                .with_stride([2, 2])
                .with_initializer(he(cin))
                .init(device);
            t.bias = Some(Param::from_tensor(Tensor::zeros([cout], device)));
            up.push(t);
            up_blocks.push(block(2 * cout, cout));
        }
        let head = he_zero_bias(
            Conv2dConfig::new([self.base_channels, self.classes], [1, 1])
                .with_initializer(he(self.base_channels))
                .init(device),
            self.classes,
            device,
        );
        UNet {
            down,
            bottom,
            up,
            up_blocks,
            head,
            dropout: DropoutConfig::new(self.dropout).init(),
        }
    }
}

fn he(fan_in: usize) -> Initializer {
    Initializer::Normal {
        mean: 0.0,
        std: (2.0 / fan_in as f64).sqrt(),
    }
}

fn he_zero_bias(mut conv: Conv2d, cout: usize, device: &Device) -> Conv2d {
    conv.bias = Some(Param::from_tensor(Tensor::zeros([cout], device)));
    conv
}

/// Two 3x3 convolutions, each followed by (optional batch norm and) ReLU.
#[derive(Module, Debug)]
pub struct DoubleConv {
    conv1: Conv3x3,
    norm1: Option<BatchNorm>,
    conv2: Conv3x3,
    norm2: Option<BatchNorm>,
}

impl DoubleConv {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = match &self.norm1 {
            Some(n) => relu(n.forward(self.conv1.forward(x))),
            None => self.conv1.forward_relu(x),
        };
        match &self.norm2 {
            Some(n) => relu(n.forward(self.conv2.forward(x))),
            None => self.conv2.forward_relu(x),
        }
    }
}

/// The U-Net. Build it with [`UNetConfig::init`].
#[derive(Module, Debug)]
pub struct UNet {
    down: Vec<DoubleConv>,
    bottom: DoubleConv,
    up: Vec<ConvTranspose2d>,
    up_blocks: Vec<DoubleConv>,
    head: Conv2d,
    dropout: Dropout,
}

impl UNet {
    /// Class scores (logits) for a batch of tiles.
    ///
    /// `x`: `[batch, in_channels, H, W]` with `H`, `W` valid input sizes of the network;
    /// returns `[batch, classes, H', W']` with `H' = output_size(H)`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut skips = Vec::with_capacity(self.down.len());
        let mut x = x;
        for block in &self.down {
            x = block.forward(x);
            skips.push(x.clone());
            // The extension's pooling: burn's took 15 ms on the CPU for the first level of a
            // 572 px tile, and its backward kept the indices of every maximum.
            x = crate::ml::ops::max_pool2x2(x);
        }
        x = crate::ml::ops::dropout(&self.dropout, self.bottom.forward(x));
        for ((up, block), skip) in self
            .up
            .iter()
            .zip(&self.up_blocks)
            .zip(skips.into_iter().rev())
        {
            // burn's ConvTranspose2d holds the parameters (and their saved names); the
            // 2x2 stride-2 up-convolution itself is our extension (GEMM kernels on the CPU).
            let weight = up.weight.val();
            let bias = match &up.bias {
                Some(b) => b.val(),
                None => Tensor::zeros([weight.dims()[1]], &x.device()),
            };
            x = crate::ml::ops::up2x2(x, weight, bias);
            // Crop-and-concat: the centre of the contracting path's map, then the up path's.
            x = block.forward(crate::ml::ops::crop_cat(skip, x));
        }
        classify(&self.head, x)
    }
}

/// The final 1x1 convolution as one matrix product over the pixels: `[classes, C]` times
/// `[C, H W]` per image. burn's `Conv2d` (which keeps the parameters and their saved names)
/// took its input gradient through a general transposed convolution, ~6 ms per training step
/// of a 572 px lite tile on the CPU for what is a product with a `C x classes` matrix.
pub fn classify(head: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    let weight = head.weight.val();
    let classes = weight.dims()[0];
    let weight = weight.reshape([1, classes, c]).expand([n, classes, c]);
    let y = weight.matmul(x.reshape([n, c, h * w]));
    let y = match &head.bias {
        Some(b) => y + b.val().reshape([1, classes, 1]),
        None => y,
    };
    y.reshape([n, classes, h, w])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_net_has_23_conv_layers_and_known_flops() {
        let cfg = UNetConfig::preset(Preset::Paper, 2);
        assert_eq!(cfg.conv_layers(), 23);
        // 300.9 GFLOP for 572 -> 388 (the figure quoted for PyTorch in the bench issue).
        let g = cfg.forward_flops(572).unwrap() / 1e9;
        assert!((g - 300.9).abs() < 0.5, "{g}");
        let lite = UNetConfig::preset(Preset::Lite, 2)
            .forward_flops(572)
            .unwrap()
            / 1e9;
        assert!((lite - 18.9).abs() < 0.2, "{lite}");
    }

    #[test]
    fn parameter_count_matches_the_built_network() {
        let device = Device::flex();
        for (preset, bn) in [
            (Preset::Lite, false),
            (Preset::Lite, true),
            (Preset::Paper, false),
        ] {
            let mut cfg = UNetConfig::preset(preset, 3);
            cfg.batch_norm = bn;
            assert_eq!(
                cfg.init(&device).num_params(),
                cfg.parameter_count(),
                "{preset:?} bn {bn}"
            );
        }
        // The paper's net: 31.0 M parameters (2 classes).
        let paper = UNetConfig::preset(Preset::Paper, 2).parameter_count();
        assert_eq!(paper, 31_030_658);
    }

    #[test]
    fn memory_estimate_by_hand() {
        let cfg = UNetConfig::preset(Preset::Paper, 2);
        let m = cfg.memory_estimate(572, false).unwrap();
        // Largest map: the first level's 64 x 570 x 570 after the first convolution.
        assert_eq!(m.largest_tensor_bytes, 4 * 64 * 570 * 570);
        let t = cfg.memory_estimate(572, true).unwrap();
        assert!(t.total_bytes > 2 * m.total_bytes, "{t:?} vs {m:?}");
        // Measured (`unet-studio bench`, peak RSS of the whole process): 1955 MB.
        assert!((1.5e9..3.0e9).contains(&(t.total_bytes as f64)), "{t:?}");
        // Smaller tiles need less; invalid tiles have no estimate.
        assert!(cfg.memory_estimate(188, true).unwrap().total_bytes < t.total_bytes);
        assert!(cfg.memory_estimate(573, true).is_none());
    }
}
