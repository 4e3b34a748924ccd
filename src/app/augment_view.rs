//! The augmentation view: one seeded elastic deformation of the shown slice (the paper's
//! 3x3 grid, Gaussian displacements, bicubic interpolation), the deformed image with the
//! deformation as a warped grid (WGSL, `shaders/deform.wgsl`) and displacement arrows, and the
//! deformed labels beside it.
//!
//! This file holds the view's state; its commands are in `actions/augment.rs`, its window in
//! [`crate::ui::windows`].

use crate::data::Plane;
use crate::preprocess::{DeformationField, ElasticConfig};
use crate::render::deform::DeformQueue;
use eframe::egui;

/// A computed deformation sample.
pub struct AugmentSample {
    /// The field (seed, control vectors).
    pub field: DeformationField,
    /// Deformed raw image.
    pub image: Plane<f32>,
    /// Deformed labels (nearest neighbour: only existing label values).
    pub labels: Plane<u8>,
    /// Dense displacement, for the arrows.
    pub dx: Plane<f32>,
    /// See `dx`.
    pub dy: Plane<f32>,
    /// Which slice it came from.
    pub slice: usize,
}

/// State of the augmentation window.
pub struct AugmentView {
    /// Window open.
    pub open: bool,
    /// Deformation parameters.
    pub config: ElasticConfig,
    /// Seed of the current sample.
    pub seed: u64,
    /// The current sample.
    pub sample: Option<AugmentSample>,
    /// Spacing of the warped grid in source pixels (0 hides it).
    pub grid_spacing: f32,
    /// Where the deformed image was drawn in the last frame (screen points).
    pub image_rect: egui::Rect,
    pub(crate) labels_texture: Option<egui::TextureHandle>,
    pub(crate) upload: DeformQueue,
    pub(crate) key: Option<(usize, u64, u32, usize)>,
}

impl Default for AugmentView {
    fn default() -> Self {
        Self {
            open: false,
            config: ElasticConfig::default(),
            seed: 1,
            sample: None,
            grid_spacing: 32.0,
            image_rect: egui::Rect::NOTHING,
            labels_texture: None,
            upload: DeformQueue::default(),
            key: None,
        }
    }
}

pub(crate) fn label_image(p: &Plane<u8>, colours: &[[u8; 3]]) -> egui::ColorImage {
    let px: Vec<egui::Color32> = p
        .data
        .iter()
        .map(|&l| match l {
            0 => egui::Color32::from_gray(25),
            l => {
                let c = colours
                    .get(l as usize - 1)
                    .copied()
                    .unwrap_or_else(|| crate::project::settings::class_color(l as usize));
                egui::Color32::from_rgb(c[0], c[1], c[2])
            }
        })
        .collect();
    egui::ColorImage::new([p.width, p.height], px)
}
