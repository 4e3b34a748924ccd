//! What the canvas keeps between frames: what the GPU already holds (so that only changes
//! are uploaded), the stroke and lasso being drawn, the readout. The drawing is
//! [`crate::ui::canvas`]; screen/image mapping is in `actions/viewer.rs`.

use crate::render::UploadQueue;

/// What the GPU already holds, so that only changes are uploaded.
#[derive(Default)]
pub(crate) struct ViewerState {
    /// Slice whose image and labels are on the GPU (`None`: upload everything).
    pub(crate) uploaded_slice: Option<usize>,
    /// The textures match the document's size.
    pub(crate) sized: bool,
    pub(crate) palette_ok: bool,
    /// Last painted position (image coordinates) during a drag.
    pub(crate) last_paint: Option<(f32, f32)>,
    /// Text of the pixel under the cursor.
    pub(crate) readout: Option<String>,
    /// Uploads not yet performed by a rendered frame.
    pub(crate) queue: UploadQueue,
    /// (slice, overlay, class, generation) of the map on the GPU, if any.
    pub(crate) map_key: Option<(usize, crate::app::model::Overlay, u8, u64)>,
    /// Whether the map on the GPU belongs to the shown slice.
    pub(crate) map_shown: bool,
    /// Outline of the lasso being drawn (image coordinates).
    pub(crate) lasso: Vec<(f32, f32)>,
}

impl ViewerState {
    pub(crate) fn invalidate(&mut self) {
        let queue = self.queue.clone();
        *self = Self::default();
        self.queue = queue;
    }
    pub(crate) fn invalidate_slice(&mut self) {
        self.uploaded_slice = None;
    }
    pub(crate) fn invalidate_palette(&mut self) {
        self.palette_ok = false;
    }
}
