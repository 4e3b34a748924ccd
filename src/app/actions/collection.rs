//! Export > "Masks of every image": each image of the open collection predicted with the
//! current model and its mask written into one folder (`<image>.tif`, the model's decision
//! rule, the image's axes and pixel size), all or nothing, in a background job.

use crate::app::jobs::{JobKind, Message};
use crate::app::studio::StudioApp;
use crate::data::io::{encode_mask, load_stack, resolved, with_channels, write_all_atomic};
use crate::data::{DataError, MaskStyle, Plane, TiffAxes};
use crate::preprocess::D4;
use crate::project::sets::{input_channels, picked};
use crate::project::tasks::{SliceProgress, predict_slices};
use std::path::{Path, PathBuf};

impl StudioApp {
    /// Predicts every image of the open collection and writes their masks into `dir`.
    pub fn export_collection(&mut self, dir: PathBuf) {
        let (Some((collection, _)), Some(m)) = (&self.collection, &self.models.model) else {
            self.error = Some("masks of every image need a collection and a model".into());
            return;
        };
        if resolved(&dir) == resolved(&collection.folder) {
            self.error = Some(format!(
                "{} is the collection's own folder: the masks would be read as images next time; choose another folder",
                dir.display()
            ));
            return;
        }
        let collection = collection.clone();
        let (model, unet, decision) = (m.model.clone(), m.unet.clone(), m.decision);
        let colours: Vec<[u8; 3]> = self
            .doc
            .as_ref()
            .map(|d| d.classes.iter().map(|c| c.color).collect())
            .unwrap_or_default();
        let device = self.models.compute.device.clone();
        let tile = self.models.tile_for(&unet, false);
        let views: Vec<D4> = D4::all()[..self.models.tta_views.clamp(1, 8)].to_vec();
        self.status = format!(
            "predicting the {} images of the collection into {}",
            collection.files.len(),
            dir.display()
        );
        self.jobs.spawn(JobKind::Export, "export", move |ctx| {
            let run = || -> Result<(Vec<PathBuf>, String), DataError> {
                std::fs::create_dir_all(&dir).map_err(|e| DataError::io(&dir, e))?;
                let n = collection.files.len();
                let mut files = Vec::new();
                for (i, file) in collection.files.iter().enumerate() {
                    ctx.progress(i as f32 / n as f32, format!("image {} of {n}", i + 1));
                    let mut stack = load_stack(file)?;
                    with_channels(&mut stack, collection.channels)?;
                    let pick = input_channels(&unet, stack.channels, file)
                        .map_err(|e| DataError::invalid(file, e.to_string()))?;
                    let mut masks = Masks(Vec::new(), decision);
                    predict_slices(
                        (&model, &unet),
                        &picked(&stack, &pick)?,
                        tile,
                        &views,
                        (&device, &ctx.cancel),
                        &mut masks,
                    )
                    .map_err(|e| DataError::invalid(file, e.to_string()))?;
                    let path = dir.join(mask_name(file));
                    files.extend(encode_mask(
                        &path,
                        &masks.0,
                        MaskStyle::Classes,
                        &colours,
                        &TiffAxes::of(&stack),
                    )?);
                }
                write_all_atomic(&files)?;
                Ok((
                    files.into_iter().map(|(p, _)| p).collect(),
                    format!("the masks of {n} images"),
                ))
            };
            Message::Exported(run())
        });
    }

    /// Whether Export > "Masks of every image" can run.
    pub fn can_export_collection(&self) -> bool {
        self.collection.is_some() && self.models.model.is_some()
    }
}

/// The masks of one image's slices by the model's decision rule.
struct Masks(Vec<Plane<u16>>, crate::postprocess::Decision);

impl SliceProgress for Masks {
    fn slice(&mut self, _: usize, probs: Vec<Plane<f32>>) {
        self.0.push(self.1.classes(&probs));
    }
}

/// `<image file stem>.tif`.
fn mask_name(file: &Path) -> String {
    format!(
        "{}.tif",
        file.file_stem().unwrap_or_default().to_string_lossy()
    )
}
