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
    /// (slice, generation) of the probabilities last sent to the GPU.
    pub(crate) probs_key: Option<(usize, u64)>,
    /// Whether the GPU holds the probabilities of `probs_key` (the slice was predicted).
    pub(crate) probs_shown: bool,
    /// The gap-closing lines on the GPU, if any.
    pub(crate) lines_key: Option<crate::app::model::GapKey>,
    /// The weight map on the GPU, if any.
    pub(crate) weight_key: Option<crate::app::model::WeightKey>,
    /// Whether the weight map on the GPU belongs to the shown slice.
    pub(crate) map_shown: bool,
    /// Outline of the lasso being drawn (image coordinates).
    pub(crate) lasso: Vec<(f32, f32)>,
    /// A slice of a stack read on demand whose read failed (not tried again every frame;
    /// reopening the stack tries again).
    pub(crate) unreadable: Option<usize>,
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
