//! Helpers shared by the engine tests: real EM crops of the bundled sample, the lite net, a
//! short training config and a scratch folder.

use std::path::{Path, PathBuf};

use unet_studio::data::{
    LabelEncoding, LabelSlice, Plane, encode_labels, load_label_stack, load_stack,
};
use unet_studio::ml::{OptimizerConfig, Preset, TrainConfig, UNetConfig};
use unet_studio::preprocess::normalize_percentile;

/// The bundled ISBI 2012 sample.
pub fn sample_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/isbi2012")
}

/// A real EM crop of sample slice `s` and its full binary labels.
pub fn em_crop(s: usize, x0: usize, y0: usize, size: usize) -> (Plane<f32>, LabelSlice) {
    let name = format!("slice{s:02}.png");
    let stack = load_stack(&sample_dir().join("images").join(&name)).unwrap();
    let labels = load_label_stack(&sample_dir().join("labels").join(&name)).unwrap();
    let img = normalize_percentile(&stack.image(0).unwrap()[0]).crop_mirrored(
        x0 as isize,
        y0 as isize,
        size,
        size,
    );
    let lab = labels[0].crop_mirrored(x0 as isize, y0 as isize, size, size);
    (img, encode_labels(&lab, LabelEncoding::Binary).unwrap())
}

/// The lite preset with two classes.
pub fn lite() -> UNetConfig {
    UNetConfig::preset(Preset::Lite, 2)
}

/// A short run on 36 px tiles: Adam, no validation, no checkpoints.
pub fn quick_cfg(iterations: u64, seed: u64) -> TrainConfig {
    TrainConfig {
        iterations,
        tile_out: 36,
        optimizer: OptimizerConfig::Adam { lr: 1e-3 },
        seed,
        val_fraction: 0.0,
        val_every: 0,
        checkpoint_every: 0,
        ..TrainConfig::default()
    }
}

/// An empty folder of this test process.
pub fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("unet-studio-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The class probabilities of `model` on `img` in tiles of `tile` px, on the CPU.
pub fn probabilities(
    model: &unet_studio::ml::UNet,
    unet: &UNetConfig,
    img: &Plane<f32>,
    tile: usize,
) -> Vec<Plane<f32>> {
    unet_studio::ml::predict_probabilities(
        model,
        unet,
        std::slice::from_ref(img),
        tile,
        &unet_studio::ml::device::cpu_device().device,
        &unet_studio::ml::CancelToken::new(),
        &mut |_, _| {},
    )
    .unwrap()
}
