//! Our own wgpu pipelines, drawn through egui paint callbacks: the image viewer (image
//! window, labels, probability / weight-map heat maps, texture tiles) and the augmentation
//! view's deformed image with its warped grid. Built once per renderer; they know textures and
//! uniforms only, never application state.

pub mod deform;
pub mod gpu;
pub mod tiles;
pub mod viewer;

pub use viewer::{
    GpuFeed, TileRect, Upload, UploadQueue, ViewUniforms, ViewerCallback, max_texture_edge,
    tile_layout,
};

use eframe::egui_wgpu::{self};

/// Builds every pipeline and registers them in the renderer's callback resources.
pub fn install(rs: &egui_wgpu::RenderState) {
    viewer::install(rs);
    deform::install(rs);
}
