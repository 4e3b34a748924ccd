//! What a training or an evaluation reads, for the command line and the app alike: labels
//! loaded and checked against their images (one check, one wording), the training set built
//! from both, fully labelled held-out slices, and the default recipe of a run.

use std::path::{Path, PathBuf};

use crate::data::error::DataError;
use crate::data::io::collection::{label_files, load_collection, unify_channels};
use crate::data::io::read::{load_label_stack, load_stack};
use crate::data::labels::{LabelEncoding, LabelSlice, encode_labels};
use crate::data::plane::Plane;
use crate::data::stack::{Planes, SliceSource, Stack};
use crate::ml::config::{OptimizerConfig, TrainConfig};
use crate::ml::train::events::StartFrom;
use crate::ml::train::set::{HeldOutSlice, TrainSet};
use crate::ml::unet::{Preset, UNetConfig};
use crate::preprocess::normalize_percentile;
use std::sync::Arc;

/// Learning rate of a fine-tune (a tenth of training from scratch: at 1e-3 a short run on a
/// few strokes washed out the shipped model's probabilities).
pub const FINE_TUNE_LR: f64 = 1e-4;

/// Width and height of each slice of a stack or label file.
pub fn sizes<T>(planes: &[Plane<T>]) -> Vec<(usize, usize)> {
    planes.iter().map(|p| (p.width, p.height)).collect()
}

/// Refuses labels or a prediction (`labels`, one size per slice) that do not fit the images or
/// the truth they belong to (`images`): another number of slices, or a slice of another size.
/// The message names both files.
pub fn check_fit(
    (labels_path, labels): (&Path, &[(usize, usize)]),
    (images_path, images): (&Path, &[(usize, usize)]),
) -> Result<(), DataError> {
    if labels.len() != images.len() {
        return Err(DataError::invalid(
            labels_path,
            format!(
                "{} slice{}, but {} has {}",
                labels.len(),
                if labels.len() == 1 { "" } else { "s" },
                images_path.display(),
                images.len()
            ),
        ));
    }
    match labels.iter().zip(images).position(|(l, i)| l != i) {
        None => Ok(()),
        Some(s) => Err(DataError::invalid(
            labels_path,
            format!(
                "slice {s} is {}x{}, but slice {s} of {} is {}x{}",
                labels[s].0,
                labels[s].1,
                images_path.display(),
                images[s].0,
                images[s].1
            ),
        )),
    }
}

/// Reads the label file or folder `path` and encodes it as `encoding` says; errors name the
/// file and the slice.
pub fn load_labels(path: &Path, encoding: LabelEncoding) -> Result<Vec<LabelSlice>, DataError> {
    let raw = load_label_stack(path)?;
    raw.iter()
        .enumerate()
        .map(|(i, r)| {
            encode_labels(r, encoding)
                .map_err(|e| DataError::invalid(path, format!("slice {i}: {e}")))
        })
        .collect()
}

/// Reads and encodes the labels at `path` for the images at `images_path` (slice sizes
/// `images`), refusing labels that do not fit them.
pub fn labels_for(
    path: &Path,
    encoding: LabelEncoding,
    (images_path, images): (&Path, &[(usize, usize)]),
) -> Result<Vec<LabelSlice>, DataError> {
    let labels = load_labels(path, encoding)?;
    let label_sizes: Vec<(usize, usize)> = labels
        .iter()
        .map(|l| (l.classes.width, l.classes.height))
        .collect();
    check_fit((path, &label_sizes), (images_path, images))?;
    Ok(labels)
}

/// The images at `images` (one stack, or a collection of images that differ, given equal
/// channels) and the labels at `labels`, read and checked against them file by file.
pub fn images_and_labels(
    images: &Path,
    labels: &Path,
    encoding: LabelEncoding,
) -> Result<(Vec<Stack>, Vec<LabelSlice>), DataError> {
    let mut stacks = load_collection(images)?;
    unify_channels(&mut stacks)?;
    let files = label_files(labels, stacks.len())?;
    let mut out = Vec::new();
    for (stack, file) in stacks.iter().zip(&files) {
        let source = match stacks.len() {
            1 => images.to_path_buf(),
            _ => stack.sources.first().cloned().unwrap_or_default(),
        };
        out.extend(labels_for(file, encoding, (&source, &stack.slice_sizes()))?);
    }
    Ok((stacks, out))
}

/// Refuses labels whose classes look like a misread encoding: only 0 and 255 in the
/// `classes` encoding (a binary mask: 255 classes would be trained), or more than 32 classes.
pub fn check_plausible_classes(
    path: &Path,
    labels: &[LabelSlice],
    encoding: LabelEncoding,
) -> Result<(), DataError> {
    if encoding != LabelEncoding::Classes {
        return Ok(());
    }
    let mut used = [false; 256];
    for l in labels {
        for &c in &l.classes.data {
            used[usize::from(c)] = true;
        }
    }
    let classes: Vec<usize> = (1..256).filter(|&c| used[c]).collect();
    if classes == [255] {
        return Err(DataError::invalid(
            path,
            "the labels hold only 0 and 255, which the 'classes' encoding reads as unlabelled and class 255 (a 255-class network); for a binary mask use --label-encoding binary (0 = class 1, 255 = class 2)",
        ));
    }
    if let Some(&max) = classes.last()
        && max > 32
    {
        return Err(DataError::invalid(
            path,
            format!(
                "class {max} in the 'classes' encoding would train a {max}-class network; classes are 1, 2, 3, ... (0 = unlabelled); for instance ids use --label-encoding instances"
            ),
        ));
    }
    Ok(())
}

/// The stack channels that feed `unet`, checked against a stack of `channels` channels read
/// from `source`: the ones the network names, or all when it takes as many as the stack has.
pub fn input_channels(
    unet: &UNetConfig,
    channels: usize,
    source: &Path,
) -> Result<Vec<usize>, DataError> {
    let list = unet.input_channel_list();
    if unet.input_channels.is_empty() && channels != unet.in_channels {
        return Err(DataError::invalid(
            source,
            format!(
                "it has {channels} channel(s) but the model takes {} and does not say which; choose the channel(s) to use (--channels, 0-based)",
                unet.in_channels
            ),
        ));
    }
    if let Some(&c) = list.iter().find(|&&c| c >= channels) {
        return Err(DataError::invalid(
            source,
            format!(
                "the model reads channel {c} (of channels {list:?}, 0-based) but the file has {channels} channel(s)"
            ),
        ));
    }
    Ok(list)
}

/// The channels a new network reads from a stack of `channels` channels (read from `source`):
/// the ones `asked` (0-based, in order), or all of them; 1 to 4.
pub fn training_channels(
    asked: &[usize],
    channels: usize,
    source: &Path,
) -> Result<Vec<usize>, DataError> {
    let list: Vec<usize> = if asked.is_empty() {
        (0..channels).collect()
    } else {
        asked.to_vec()
    };
    if let Some(&c) = list.iter().find(|&&c| c >= channels) {
        return Err(DataError::invalid(
            source,
            format!("channel {c} was asked for, but the file has {channels} channel(s) (0-based)"),
        ));
    }
    if !(1..=4).contains(&list.len()) {
        return Err(DataError::invalid(
            source,
            format!(
                "a network reads 1 to 4 channels; the file has {channels}: choose up to 4 (--channels, 0-based)"
            ),
        ));
    }
    Ok(list)
}

/// A new network of `preset` for `classes` classes reading the channels `asked` (see
/// [`training_channels`]) of a stack of `channels` channels read from `source`. A grey
/// network of a grey stack names no channels (as before channels existed).
pub fn new_network(
    preset: Preset,
    classes: usize,
    asked: &[usize],
    channels: usize,
    source: &Path,
) -> Result<UNetConfig, DataError> {
    let pick = training_channels(asked, channels, source)?;
    let unet = UNetConfig::preset(preset, classes);
    Ok(if channels == 1 {
        unet
    } else {
        unet.with_input_channels(pick)
    })
}

/// The planes of the channels `pick` of every slice of `stack` (a stack in memory; one read
/// on demand is refused, naming its file).
pub fn picked<'a>(stack: &'a Stack, pick: &[usize]) -> Result<Vec<Vec<&'a Plane<f32>>>, DataError> {
    let planes = stack.all_planes()?;
    Ok(planes
        .chunks_exact(stack.channels.max(1))
        .map(|slice| pick.iter().map(|&c| &slice[c]).collect())
        .collect())
}

/// Copies of the channels `pick` of the slices `slices` of `stack`, read from the file when
/// the stack is read on demand.
pub fn picked_slices(
    stack: &Stack,
    pick: &[usize],
    slices: &[usize],
) -> Result<Vec<Vec<Plane<f32>>>, DataError> {
    slices
        .iter()
        .map(|&s| {
            let path = stack.sources.get(s).map_or(Path::new(""), PathBuf::as_path);
            pick_channels(&stack.image(s)?, pick, (path, s))
        })
        .collect()
}

/// Copies of the channels `pick` of slice `s` (its `image`, read from `path`); a channel the
/// slice does not have is an error naming the file.
fn pick_channels(
    image: &[Plane<f32>],
    pick: &[usize],
    (path, s): (&Path, usize),
) -> Result<Vec<Plane<f32>>, DataError> {
    pick.iter()
        .map(|&c| {
            image.get(c).cloned().ok_or_else(|| {
                DataError::invalid(
                    path,
                    format!("channel {} asked for; slice {s} has {}", c + 1, image.len()),
                )
            })
        })
        .collect()
}

/// The channels `pick` of some slices of a stack, for a background job: copied when the job is
/// started from a stack in memory, read by the job from a stack read on demand (so the thread
/// that starts the job never waits for the disk).
#[derive(Debug)]
pub enum JobSlices {
    /// Copies of the slices' channels.
    Copied(Vec<Vec<Plane<f32>>>),
    /// The file's cache, the channels and the slices to read.
    OnDemand(Arc<dyn SliceSource>, Vec<usize>, Vec<usize>),
}

impl JobSlices {
    /// The channels `pick` of `slices` of `stack`.
    pub fn of(stack: &Stack, pick: &[usize], slices: &[usize]) -> Result<Self, DataError> {
        Ok(match &stack.planes {
            Planes::OnDemand(cache) => {
                Self::OnDemand(Arc::clone(cache), pick.to_vec(), slices.to_vec())
            }
            Planes::Memory(_) => Self::Copied(picked_slices(stack, pick, slices)?),
        })
    }

    /// The slices' channels (read from the file now when the stack is read on demand).
    pub fn read(self) -> Result<Vec<Vec<Plane<f32>>>, DataError> {
        match self {
            Self::Copied(images) => Ok(images),
            Self::OnDemand(cache, pick, slices) => slices
                .iter()
                .map(|&s| pick_channels(&cache.slice(s)?, &pick, (cache.path(), s)))
                .collect(),
        }
    }
}

/// The training set of raw images (each the planes of the channels the network reads) and
/// their labels (checked to fit by the caller): the images normalised channel by channel as the
/// network sees them, with `held_out` slices for validation.
pub fn train_set(
    images: &[Vec<&Plane<f32>>],
    labels: Vec<LabelSlice>,
    held_out: Vec<HeldOutSlice>,
) -> TrainSet {
    TrainSet {
        images: images.iter().map(|i| normalized(i)).collect(),
        labels,
        held_out,
    }
}

/// Every channel normalised as the network sees it.
pub fn normalized(image: &[&Plane<f32>]) -> Vec<Plane<f32>> {
    image.iter().map(|c| normalize_percentile(c)).collect()
}

/// Fully labelled held-out slices for validation (normalised images of the channels `pick` and
/// their cell masks), from an image stack and its labels; refuses labels that do not fit or
/// leave pixels unlabelled.
pub fn held_out_slices(
    images_path: &Path,
    labels_path: &Path,
    encoding: LabelEncoding,
    pick: &[usize],
) -> Result<Vec<HeldOutSlice>, DataError> {
    let stack = load_stack(images_path)?;
    let labels = labels_for(labels_path, encoding, (images_path, &stack.slice_sizes()))?;
    let pick = training_channels(pick, stack.channels, images_path)?;
    picked(&stack, &pick)?
        .iter()
        .zip(&labels)
        .enumerate()
        .map(|(i, (image, l))| {
            if l.classes.data.contains(&0) {
                return Err(DataError::invalid(
                    labels_path,
                    format!("slice {i} has unlabelled pixels; validation slices need full labels"),
                ));
            }
            Ok(HeldOutSlice {
                image: normalized(image),
                cell: l.classes.map(|c| c >= 2),
            })
        })
        .collect()
}

/// The default recipe of a run from `start`, which the command line's flags and the app's
/// settings then adjust: a fine-tune learns at [`FINE_TUNE_LR`] and keeps the class weights
/// its starting network was trained with (the strokes' own class frequencies would move the
/// network's calibration); a resumed run keeps them too.
pub fn recipe(start: &StartFrom) -> TrainConfig {
    let inherited = match start {
        StartFrom::FineTune(c) | StartFrom::Resume(c) => c
            .meta
            .train
            .as_ref()
            .map(|t| t.class_weights.clone())
            .unwrap_or_default(),
        StartFrom::Scratch(_) => Vec::new(),
    };
    let base = TrainConfig::default();
    let optimizer = match start {
        StartFrom::FineTune(_) => OptimizerConfig::Adam { lr: FINE_TUNE_LR },
        _ => base.optimizer,
    };
    TrainConfig {
        optimizer,
        class_weights: inherited,
        ..base
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::checkpoint::{Checkpoint, CheckpointMeta};
    use std::path::PathBuf;

    fn classes(data: Vec<u32>) -> LabelSlice {
        let raw = Plane {
            width: data.len(),
            height: 1,
            data,
        };
        encode_labels(&raw, LabelEncoding::Classes).unwrap()
    }

    #[test]
    fn fit_names_both_files_and_the_slice() {
        let (l, i) = (PathBuf::from("l.tif"), PathBuf::from("i.tif"));
        let ok = [(4, 3), (5, 2)];
        assert!(check_fit((&l, &ok), (&i, &ok)).is_ok());
        let e = check_fit((&l, &ok[..1]), (&i, &ok))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "l.tif: 1 slice, but i.tif has 2");
        // Each slice against its own image: a collection of sizes fits slice by slice.
        let e = check_fit((&l, &[(4, 3), (2, 5)]), (&i, &ok))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "l.tif: slice 1 is 2x5, but slice 1 of i.tif is 5x2");
    }

    #[test]
    fn implausible_classes_are_refused() {
        let binary = classes(vec![0, 255]);
        let p = Path::new("m.png");
        let e = check_plausible_classes(p, std::slice::from_ref(&binary), LabelEncoding::Classes)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("m.png: ") && e.contains("--label-encoding binary"));
        assert!(check_plausible_classes(p, &[binary], LabelEncoding::Binary).is_ok());
        let fine = classes(vec![1, 2]);
        assert!(check_plausible_classes(p, &[fine], LabelEncoding::Classes).is_ok());
    }

    #[test]
    fn a_fine_tune_keeps_the_class_weights_of_its_network() {
        let unet = UNetConfig::preset(Preset::Lite, 2);
        let scratch = recipe(&StartFrom::Scratch(unet.clone()));
        assert!(scratch.class_weights.is_empty());
        assert_eq!(scratch.optimizer, OptimizerConfig::default_recipe());
        let mut meta = CheckpointMeta::new(unet, 10, "");
        meta.train = Some(TrainConfig {
            class_weights: vec![2.0, 0.5],
            ..TrainConfig::default()
        });
        let ckpt = Checkpoint {
            meta,
            weights: Vec::new(),
            optimizer: Vec::new(),
        };
        let fine = recipe(&StartFrom::FineTune(Box::new(ckpt.clone())));
        assert_eq!(fine.class_weights, [2.0, 0.5]);
        assert_eq!(fine.optimizer, OptimizerConfig::Adam { lr: FINE_TUNE_LR });
        let resumed = recipe(&StartFrom::Resume(Box::new(ckpt)));
        assert_eq!(resumed.class_weights, [2.0, 0.5]);
        assert_eq!(resumed.optimizer, OptimizerConfig::default_recipe());
    }
}
