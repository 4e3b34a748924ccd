//! Collections: a folder of images that differ in size, channels or bit depth (fields of view
//! of several acquisitions, the usual training set) read as one stack per file, with their
//! labels file by file. A folder of equal images stays one stack.

use std::path::{Path, PathBuf};

use crate::data::error::DataError;
use crate::data::io::files::stack_files;
use crate::data::io::read::load_stack;

use crate::data::stack::Stack;

/// The images at `path`: one stack for a file or a folder of equal images (as
/// [`load_stack`]), else one stack per file in natural name order.
pub fn load_collection(path: &Path) -> Result<Vec<Stack>, DataError> {
    let files = stack_files(path)?;
    if files.len() < 2 {
        return Ok(vec![load_stack(path)?]);
    }
    let stacks = files
        .iter()
        .map(|f| load_stack(f))
        .collect::<Result<Vec<Stack>, DataError>>()?;
    let first = &stacks[0];
    let equal = stacks.iter().all(|s| {
        (s.width, s.height, s.channels, s.frames) == (first.width, first.height, first.channels, 1)
    });
    if !equal {
        return Ok(stacks);
    }
    // Equal images: the folder is one stack, as before collections existed.
    Ok(vec![load_stack(path)?])
}

/// The label files at `path` for a collection of `images` images: `path` itself for one
/// stack, else the folder's files (one per image, in the same natural name order).
pub fn label_files(path: &Path, images: usize) -> Result<Vec<PathBuf>, DataError> {
    if images < 2 {
        return Ok(vec![path.to_path_buf()]);
    }
    let files = stack_files(path)?;
    if files.len() != images {
        return Err(DataError::invalid(
            path,
            format!(
                "{} label files for a collection of {images} images (one label file per image, in the same name order)",
                files.len()
            ),
        ));
    }
    Ok(files)
}

/// Gives every image of a collection the same channels: grey images join colour ones as
/// three equal channels (a grey image saved as colour); other mixes are refused, naming a
/// file. Returns the channels.
pub fn unify_channels(images: &mut [Stack]) -> Result<usize, DataError> {
    let most = images.iter().map(|s| s.channels).max().unwrap_or(1);
    for s in images.iter_mut() {
        with_channels(s, most)?;
    }
    Ok(most)
}

/// Gives one image of a collection the collection's `channels`: a grey image joins colour
/// ones as three equal channels; other mixes are refused, naming the file.
pub fn with_channels(s: &mut Stack, channels: usize) -> Result<(), DataError> {
    if s.channels == channels {
        return Ok(());
    }
    if s.channels == 1 && channels == 3 {
        s.planes = crate::data::stack::Planes::Memory(
            s.all_planes()?
                .iter()
                .flat_map(|p| [p.clone(), p.clone(), p.clone()])
                .collect(),
        );
        s.channels = 3;
        return Ok(());
    }
    let name: PathBuf = s.sources.first().cloned().unwrap_or_default();
    Err(DataError::invalid(
        name,
        format!(
            "it has {} channel(s) and other images of the collection {channels}; a network reads the same channels from every image",
            s.channels
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::io::write::MaskStyle;
    use crate::data::io::write::write_mask;
    use crate::data::plane::Plane;

    #[test]
    fn a_folder_of_different_sizes_is_a_collection_and_equal_images_one_stack() {
        let d = std::env::temp_dir().join(format!("unet-collection-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let (imgs, labs) = (d.join("images"), d.join("labels"));
        for (dir, bump) in [(&imgs, 0u16), (&labs, 1)] {
            write_mask(
                &dir.join("a.png"),
                &[Plane::filled(4, 3, 5 + bump)],
                MaskStyle::Classes,
            )
            .unwrap();
            write_mask(
                &dir.join("b.png"),
                &[Plane::filled(6, 2, 7 + bump)],
                MaskStyle::Classes,
            )
            .unwrap();
        }
        let c = load_collection(&imgs).unwrap();
        let sizes: Vec<(usize, usize)> = c.iter().map(|s| (s.width, s.height)).collect();
        assert_eq!(sizes, [(4, 3), (6, 2)]);
        let l = label_files(&labs, c.len()).unwrap();
        assert_eq!(l, [labs.join("a.png"), labs.join("b.png")]);
        std::fs::remove_file(labs.join("b.png")).unwrap();
        let e = label_files(&labs, c.len()).unwrap_err().to_string();
        assert!(
            e.contains("1 label files for a collection of 2 images"),
            "{e}"
        );
        // Equal images: one stack of two slices.
        write_mask(
            &imgs.join("b.png"),
            &[Plane::filled(4, 3, 9)],
            MaskStyle::Classes,
        )
        .unwrap();
        let one = load_collection(&imgs).unwrap();
        assert_eq!((one.len(), one[0].slices()), (1, 2));
    }

    #[test]
    fn grey_images_join_colour_ones_as_three_equal_channels() {
        let grey = Stack::grey(
            vec![Plane::filled(2, 2, 4.0)],
            crate::data::PixelKind::U8,
            Vec::new(),
        );
        let colour = Stack {
            channels: 3,
            ..Stack::grey(
                vec![Plane::filled(3, 3, 1.0); 3],
                crate::data::PixelKind::U8,
                Vec::new(),
            )
        };
        let mut c = vec![grey.clone(), colour];
        assert_eq!(unify_channels(&mut c).unwrap(), 3);
        assert_eq!(
            (
                c[0].channels,
                c[0].all_planes().unwrap().len(),
                c[0].image(0).unwrap()[2].data[0]
            ),
            (3, 3, 4.0)
        );
        let two = Stack {
            channels: 2,
            ..Stack::grey(
                vec![Plane::filled(3, 3, 1.0); 2],
                crate::data::PixelKind::U8,
                vec![PathBuf::from("two.tif")],
            )
        };
        let mut bad = vec![
            two,
            Stack {
                sources: vec![PathBuf::from("g.png")],
                ..grey
            },
        ];
        let e = unify_channels(&mut bad).unwrap_err().to_string();
        assert!(e.starts_with("g.png: it has 1 channel(s)"), "{e}");
    }
}
