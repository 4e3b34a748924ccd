//! The augmentation view's commands: drawing a new deformation in the background and taking its result.

use crate::app::augment_view::AugmentSample;
use crate::app::studio::StudioApp;
use crate::jobs::Job;
use crate::preprocess::{DeformationField, Interpolation, warp_f32, warp_nearest};
use crate::render::deform::DeformUpload;

impl StudioApp {
    /// Draws a new random deformation (next seed).
    pub fn new_augment_sample(&mut self) {
        self.augment.seed = self.augment.seed.wrapping_add(1);
    }

    pub(crate) fn poll_augment(&mut self) {
        if let Some(job) = &mut self.augment.job
            && let Some(s) = job.poll()
        {
            self.augment.job = None;
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
        if !self.augment.open || self.augment.job.is_some() {
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
        self.augment.key = Some(key);
        let slice = self.view.slice;
        let image = doc.stack.slices[slice].clone();
        let labels = doc.labels[slice].clone();
        let seed = self.augment.seed;
        self.augment.job = Some(Job::spawn("deform", self.waker.clone(), move |_| {
            let field = DeformationField::random(image.width, image.height, &cfg, seed);
            let (dx, dy) = field.dense();
            AugmentSample {
                image: warp_f32(&image, &dx, &dy, Interpolation::Bicubic),
                labels: warp_nearest(&labels, &dx, &dy),
                field,
                dx,
                dy,
                slice,
            }
        }));
    }
}
