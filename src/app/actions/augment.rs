//! The augmentation view's commands: drawing a new deformation in the background and taking its result.

use crate::app::augment_view::AugmentSample;
use crate::app::jobs::{JobKind, Message};
use crate::app::studio::StudioApp;
use crate::preprocess::{DeformationField, Interpolation, warp_f32, warp_nearest};
use crate::render::deform::DeformUpload;

impl StudioApp {
    /// Draws a new random deformation (next seed).
    pub fn new_augment_sample(&mut self) {
        self.augment.seed = self.augment.seed.wrapping_add(1);
    }

    /// A deformation drawn in the background: shown, and its field uploaded for the shader.
    pub(crate) fn apply_augment(&mut self, s: AugmentSample) {
        {
            self.augment.labels_texture = None;
            *self
                .augment
                .upload
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(DeformUpload {
                width: s.image.width as u32,
                height: s.image.height as u32,
                image: s.image.data.clone(),
                field: s
                    .dx
                    .data
                    .iter()
                    .zip(&s.dy.data)
                    .map(|(&x, &y)| [x, y])
                    .collect(),
            });
            self.augment.sample = Some(s);
        }
    }

    /// Draws a deformation of the shown slice in the background when the open view needs
    /// one (another slice, seed, sigma or grid).
    pub(crate) fn refresh_augment(&mut self) {
        if !self.augment.open || self.jobs.running(JobKind::Deform) {
            return;
        }
        let Some(doc) = &self.doc else { return };
        let cfg = self.augment.config;
        let key = (
            self.view.slice,
            self.augment.seed,
            cfg.sigma_px.to_bits(),
            cfg.grid,
        );
        if self.augment.key == Some(key) {
            return;
        }
        let slice = self.view.slice;
        // The first channel (the view shows one); a slice read on demand is deformed once
        // the viewer has read it (asked again next frame).
        let Some(image) = doc.stack.image_now(slice).and_then(|p| p.first().cloned()) else {
            return;
        };
        self.augment.key = Some(key);
        let labels = doc.labels[slice].clone();
        let seed = self.augment.seed;
        self.jobs.spawn(JobKind::Deform, "deform", move |_| {
            let field = DeformationField::random(image.width, image.height, &cfg, seed);
            let (dx, dy) = field.dense();
            Message::Deformed(Box::new(AugmentSample {
                image: warp_f32(&image, &dx, &dy, Interpolation::Bicubic),
                labels: warp_nearest(&labels, &dx, &dy),
                field,
                dx,
                dy,
                slice,
            }))
        });
    }
}
