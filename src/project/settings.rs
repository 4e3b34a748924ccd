//! What a project remembers besides its labels: class names and colours, the display's
//! contrast window (saved as `labels.unet.json`).

use crate::data::Stack;
use crate::preprocess::normalize::percentile;

/// A label class: its id is its index + 1 (0 = unlabelled).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClassInfo {
    /// Display name.
    pub name: String,
    /// Overlay colour.
    pub color: [u8; 3],
}

/// Default names and colours of the first classes.
pub fn default_classes() -> Vec<ClassInfo> {
    vec![
        ClassInfo {
            name: "background".into(),
            color: [230, 60, 60],
        },
        ClassInfo {
            name: "foreground".into(),
            color: [60, 200, 90],
        },
    ]
}

/// A palette colour for class ids beyond the named ones.
pub fn class_color(id: usize) -> [u8; 3] {
    const P: [[u8; 3]; 8] = [
        [230, 60, 60],
        [60, 200, 90],
        [70, 130, 240],
        [240, 200, 40],
        [200, 80, 220],
        [40, 210, 210],
        [250, 140, 40],
        [150, 150, 150],
    ];
    P[(id.max(1) - 1) % P.len()]
}

/// Contrast window and gamma of a stack.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Display {
    /// Raw value shown black.
    pub min: f32,
    /// Raw value shown white.
    pub max: f32,
    /// Gamma applied after windowing.
    pub gamma: f32,
}

/// What is kept about a stack besides its labels: class names and colours, contrast.
/// Saved as `<labels file>.json` and restored when the stack is opened again.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProjectSettings {
    /// Classes (class k at index k - 1).
    pub classes: Vec<ClassInfo>,
    /// Contrast window and gamma.
    pub display: Display,
}

/// The 0.5 % and 99.5 % percentiles of the first slice: the automatic contrast window.
pub fn auto_window(stack: &Stack, slice: usize) -> (f32, f32) {
    let data = &stack.slices[slice.min(stack.slices.len() - 1)].data;
    let lo = percentile(data, 0.5);
    let hi = percentile(data, 99.5);
    if hi > lo { (lo, hi) } else { (lo, lo + 1.0) }
}
