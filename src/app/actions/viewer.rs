//! Mapping between screen points and image pixels, the view's zoom, and reading the shown
//! slice of a stack read on demand.

use crate::app::jobs::{JobKind, Message};
use crate::app::studio::StudioApp;
use crate::data::{DataError, Planes};
use eframe::egui;

impl StudioApp {
    /// Reads slice `slice` of a stack read on demand into its cache, in the background (the
    /// viewer shows it when read); nothing when a read is under way or the stack is in memory.
    pub(crate) fn read_slice(&mut self, slice: usize) {
        let Some(doc) = &self.doc else { return };
        let Planes::OnDemand(cache) = &doc.stack.planes else {
            return;
        };
        if self.jobs.running(JobKind::ReadSlice) || self.viewer.unreadable == Some(slice) {
            return;
        }
        let cache = std::sync::Arc::clone(cache);
        self.jobs.spawn(JobKind::ReadSlice, "read slice", move |_| {
            Message::SliceRead(slice, cache.slice(slice).map(|_| ()))
        });
    }

    /// The slice whose image the viewer holds (`None` before the first upload, or while a
    /// slice read on demand is being read).
    pub fn shown_slice(&self) -> Option<usize> {
        self.viewer.uploaded_slice
    }

    /// A slice was read (the next frame shows it), or the error says why not (once: the slice
    /// is not read again until the stack is reopened).
    pub(crate) fn apply_slice_read(&mut self, slice: usize, res: Result<(), DataError>) {
        if let Err(e) = res {
            self.viewer.unreadable = Some(slice);
            self.error = Some(format!("cannot read slice {slice}: {e}"));
        }
    }

    /// Texture tiles of the shown slice and bytes uploaded to the GPU so far, as the renderer
    /// reported them after its last frame.
    pub fn gpu_upload_stats(&self) -> (usize, u64) {
        let feed = self
            .viewer
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (feed.tiles, feed.uploaded_bytes)
    }

    /// Bytes the viewer copied into its textures from GPU buffers (probabilities that burn
    /// computed on the display's device).
    pub fn gpu_copied_bytes(&self) -> u64 {
        self.viewer
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .gpu_copied_bytes
    }

    /// Limits the texture edge of the image display (at most the device's limit; larger
    /// images are split into tiles) and rebuilds the textures.
    pub fn set_texture_tile_edge(&mut self, edge: u32) {
        self.max_texture_edge = edge;
        self.viewer.invalidate();
    }

    /// The pixel readout under the cursor, if any.
    pub fn viewer_readout(&self) -> Option<String> {
        self.viewer.readout.clone()
    }

    /// Screen position of image coordinates, given the canvas rect.
    pub fn image_to_screen(&self, rect: egui::Rect, x: f32, y: f32) -> egui::Pos2 {
        rect.min + (egui::vec2(x, y) - self.view.origin) * self.view.zoom
    }

    pub(crate) fn screen_to_image(&self, rect: egui::Rect, p: egui::Pos2) -> (f32, f32) {
        let v = self.view.origin + (p - rect.min) / self.view.zoom;
        (v.x, v.y)
    }
}
