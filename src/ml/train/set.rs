//! What a run trains on: the training set ([`TrainSet`]), the blocks of labels held out for
//! validation, the weight maps and the random, augmented tiles drawn from them.

use burn::prelude::*;

use crate::data::{LabelSlice, Plane};
use crate::ml::checkpoint::fnv1a_hex;
use crate::ml::config::TrainConfig;
use crate::ml::infer::plane_tensor;
use crate::preprocess::{
    D4, DeformationField, GreyJitter, Interpolation, Rng, warp_f32, warp_nearest,
};

/// Training images (normalised, each with its channels) and their labels, slice by slice.
#[derive(Clone, Debug)]
pub struct TrainSet {
    /// Normalised images: the channels of each slice (as many as the network takes).
    pub images: Vec<Vec<Plane<f32>>>,
    /// Labels of each image (same size).
    pub labels: Vec<LabelSlice>,
    /// Fully labelled slices held out for validation by the paper's measures (may be empty;
    /// then validation uses the held-out blocks of `labels`).
    pub held_out: Vec<HeldOutSlice>,
}

impl TrainSet {
    /// Number of classes the labels use (at least 2).
    pub fn classes(&self) -> usize {
        crate::data::labels::class_count(&self.labels)
    }

    /// FNV-1a hash of all label classes.
    pub fn labels_hash(&self) -> String {
        fnv1a_hex(self.labels.iter().map(|l| &l.classes.data[..]))
    }
}

/// A normalised image and the cell (class 2) mask of its full labels.
#[derive(Clone, Debug)]
pub struct HeldOutSlice {
    /// Normalised image (its channels).
    pub image: Vec<Plane<f32>>,
    /// Where the truth is cell (class >= 2).
    pub cell: Plane<bool>,
}

/// One training sample: input tile, classes and weights of the output tile.
#[derive(Clone, Debug)]
pub struct Sample {
    /// `tile_in x tile_in` normalised image, one plane per channel.
    pub image: Vec<Plane<f32>>,
    /// `tile_out x tile_out` classes (0 = unlabelled).
    pub classes: Plane<u8>,
    /// `tile_out x tile_out` weights.
    pub weights: Plane<f32>,
    /// `tile_out x tile_out` class probabilities of the starting network, one plane per class,
    /// the targets of the unlabelled pixels in a fine-tune (empty otherwise).
    pub soft: Vec<Plane<f32>>,
}

/// Per-slice masks of the held-out validation blocks.
pub(crate) fn validation_masks(set: &TrainSet, cfg: &TrainConfig) -> Vec<Plane<bool>> {
    let mut rng = Rng::new(cfg.seed ^ 0x7A11_DA7E);
    let b = cfg.val_block_px.max(8);
    set.labels
        .iter()
        .map(|l| {
            let (w, h) = (l.classes.width, l.classes.height);
            let (bw, bh) = (w.div_ceil(b), h.div_ceil(b));
            let blocks: Vec<bool> = (0..bw * bh)
                .map(|_| rng.uniform() < f64::from(cfg.val_fraction))
                .collect();
            let mut m = Plane::filled(w, h, false);
            for y in 0..h {
                for x in 0..w {
                    m.set(x, y, blocks[(y / b) * bw + x / b]);
                }
            }
            m
        })
        .collect()
}

/// What a run trains each slice towards.
pub(crate) struct SliceTargets<'a> {
    /// Classes (0 = unlabelled).
    pub(crate) classes: &'a [Plane<u8>],
    /// Pixel weights.
    pub(crate) weights: &'a [Plane<f32>],
    /// The starting network's class probabilities (fine-tunes; empty otherwise).
    pub(crate) parent: &'a [Vec<Plane<f32>>],
}

/// Draws one augmented training sample centred near a random training pixel: the image, the
/// classes, weights and (in a fine-tune) the starting network's probabilities of each slice
/// (`parent`, empty otherwise) cropped, deformed and turned alike.
#[allow(clippy::too_many_arguments)]
pub(crate) fn draw_sample(
    set: &TrainSet,
    targets: &SliceTargets<'_>,
    pixels: &[Vec<u32>],
    cumulative: &[usize],
    tile_out: usize,
    tile_in: usize,
    cfg: &TrainConfig,
    rng: &mut Rng,
) -> Sample {
    let total = cumulative.last().copied().unwrap_or(0);
    let pick = rng.below(total.max(1));
    let s = cumulative.partition_point(|&c| c <= pick);
    let s = s.min(set.images.len() - 1);
    let list = &pixels[s];
    let idx = list[rng.below(list.len())] as usize;
    let img = &set.images[s];
    let width = targets.classes[s].width;
    let (px, py) = (idx % width, idx / width);
    let jitter = (tile_out / 4).max(1);
    let margin = (tile_in - tile_out) / 2;
    let ox =
        px as isize - (tile_out / 2) as isize + rng.below(2 * jitter) as isize - jitter as isize;
    let oy =
        py as isize - (tile_out / 2) as isize + rng.below(2 * jitter) as isize - jitter as isize;
    let (ix, iy) = (ox - margin as isize, oy - margin as isize);
    let mut image: Vec<Plane<f32>> = img
        .iter()
        .map(|c| c.crop_mirrored(ix, iy, tile_in, tile_in))
        .collect();
    let mut classes = targets.classes[s].crop_mirrored(ix, iy, tile_in, tile_in);
    let mut wmap = targets.weights[s].crop_mirrored(ix, iy, tile_in, tile_in);
    let mut soft: Vec<Plane<f32>> = targets
        .parent
        .get(s)
        .map(|p| {
            p.iter()
                .map(|c| c.crop_mirrored(ix, iy, tile_in, tile_in))
                .collect()
        })
        .unwrap_or_default();
    let aug = &cfg.augment;
    if aug.elastic {
        let field = DeformationField::random(tile_in, tile_in, &cfg.elastic, rng.next_u64());
        let (dx, dy) = field.dense();
        image = image
            .iter()
            .map(|c| warp_f32(c, &dx, &dy, Interpolation::Bicubic))
            .collect();
        classes = warp_nearest(&classes, &dx, &dy);
        wmap = warp_nearest(&wmap, &dx, &dy);
        soft = soft.iter().map(|c| warp_nearest(c, &dx, &dy)).collect();
    }
    if aug.flips_rotations {
        let d4 = D4::random(rng);
        image = image.iter().map(|c| d4.apply(c)).collect();
        classes = d4.apply(&classes);
        wmap = d4.apply(&wmap);
        soft = soft.iter().map(|c| d4.apply(c)).collect();
    }
    if aug.brightness > 0.0 || aug.contrast > 0.0 || aug.gamma > 0.0 {
        // One jitter for every channel: a brighter or darker acquisition.
        let jitter = GreyJitter::random(aug, rng);
        image.iter_mut().for_each(|c| jitter.apply(c));
    }
    let m = margin as isize;
    Sample {
        image,
        classes: classes.crop_mirrored(m, m, tile_out, tile_out),
        weights: wmap.crop_mirrored(m, m, tile_out, tile_out),
        soft: soft
            .iter()
            .map(|c| c.crop_mirrored(m, m, tile_out, tile_out))
            .collect(),
    }
}

/// One-hot `[1, K, H, W]` targets (all zero at unlabelled pixels) and `[1, 1, H, W]` weights.
pub fn target_tensors(
    classes: &Plane<u8>,
    weights: &Plane<f32>,
    n_classes: usize,
    device: &Device,
) -> (Tensor<4>, Tensor<4>) {
    target_tensors_with(classes, &[], weights, n_classes, device)
}

/// [`target_tensors`] whose unlabelled pixels take the class probabilities `soft` (one plane
/// per class; none when empty) as targets: the cross-entropy to them is the distillation of
/// the network that predicted them.
pub fn target_tensors_with(
    classes: &Plane<u8>,
    soft: &[Plane<f32>],
    weights: &Plane<f32>,
    n_classes: usize,
    device: &Device,
) -> (Tensor<4>, Tensor<4>) {
    let n = classes.data.len();
    let mut onehot = vec![0.0f32; n_classes * n];
    for (i, &c) in classes.data.iter().enumerate() {
        if c >= 1 && (c as usize) <= n_classes {
            onehot[(c as usize - 1) * n + i] = 1.0;
        } else if c == 0 && soft.len() == n_classes {
            for (k, plane) in soft.iter().enumerate() {
                onehot[k * n + i] = plane.data[i];
            }
        }
    }
    let (h, w) = (classes.height, classes.width);
    (
        Tensor::from_data(TensorData::new(onehot, [1, n_classes, h, w]), device),
        plane_tensor(weights, device),
    )
}
