//! Comparing two model versions: the background job that predicts the shown slice with both, and its result.

use crate::app::compare::{CompareSide, Comparison, label_error};
use crate::app::jobs::{JobKind, Message};
use crate::app::studio::StudioApp;
use crate::data::Plane;
use crate::ml::{MlError, load_checkpoint, predict_fitting};
use crate::postprocess::argmax_classes;
use crate::preprocess::{D4, normalize_percentile};
use crate::project::models::VersionInfo;
use crate::project::sets::input_channels;

impl StudioApp {
    /// Compares the two ticked versions on the shown slice, in the background.
    pub fn compare_selected(&mut self) {
        let [a, b] = match self.compare.selected.as_slice() {
            [a, b] => [a.clone(), b.clone()],
            _ => return,
        };
        let Some(doc) = &self.doc else { return };
        if self.jobs.running(JobKind::Compare) {
            return;
        }
        let versions: Vec<VersionInfo> = [&a, &b]
            .iter()
            .filter_map(|d| self.models.history.iter().find(|v| &v.dir == *d).cloned())
            .collect();
        let Ok([va, vb]) = <[VersionInfo; 2]>::try_from(versions) else {
            return;
        };
        let slice = self.view.slice;
        // Every channel of the slice; each version reads the ones its network names. A slice
        // read on demand is compared once the viewer has read it.
        let Some(image) = doc.stack.image_now(slice).map(|p| p.to_vec()) else {
            self.status = "the slice is still being read: compare again in a moment".into();
            return;
        };
        let source = doc.source.clone();
        let labels = doc.labels[slice].clone();
        let compute = self.models.compute.clone();
        // The prediction tiles the app uses for these networks on this device.
        let tiles = [&va, &vb].map(|v| self.models.tile_for(&v.meta.unet, false));
        self.compare.open = true;
        self.compare.textures = None;
        self.jobs.spawn(JobKind::Compare, "compare", move |ctx| {
            let side = |v: VersionInfo, tile: usize| -> Result<CompareSide, MlError> {
                let ckpt = load_checkpoint(&v.dir)?;
                let model = ckpt.model(&compute.device)?;
                let unet = &ckpt.meta.unet;
                let pick = input_channels(unet, image.len(), &source)?;
                let input: Vec<Plane<f32>> = pick
                    .iter()
                    .map(|&c| normalize_percentile(&image[c]))
                    .collect();
                let (_, probs) = predict_fitting(
                    &model,
                    unet,
                    &input,
                    tile,
                    &compute.device,
                    &ctx.cancel,
                    &mut |_, _| {},
                    &mut |_, _| {},
                    &[D4::default()],
                )?;
                let label_error = label_error(&argmax_classes(&probs), &labels);
                Ok(CompareSide {
                    version: v,
                    probs,
                    label_error,
                })
            };
            let both = || {
                let first = side(va, tiles[0])?;
                let second = side(vb, tiles[1])?;
                let (ma, mb) = (argmax_classes(&first.probs), argmax_classes(&second.probs));
                let same = ma.data.iter().zip(&mb.data).filter(|(a, b)| a == b).count();
                Ok(Comparison {
                    slice,
                    agreement: same as f64 / ma.data.len().max(1) as f64,
                    sides: [first, second],
                })
            };
            Message::Compared(Box::new(both()))
        });
    }

    /// A comparison ended: shown in the compare window.
    pub(crate) fn apply_comparison(&mut self, res: Result<Comparison, MlError>) {
        match res {
            Ok(c) => self.compare.result = Some(c),
            Err(MlError::Cancelled) => {}
            Err(e) => self.error = Some(format!("comparing versions failed: {e}")),
        }
    }
}
