//! Real microscopy files: a corpus written by Python's tifffile (ImageJ hyperstacks, OME-TIFF
//! with several dimension orders, RGB, BigTIFF, big-endian) read with the right channels, Z,
//! T and pixel size; files whose description disagrees with their pages refused; exports
//! that keep the axes and the scale, read back by tifffile.

use std::path::{Path, PathBuf};

use unet_studio::data::{
    MaskStyle, PixelSize, Plane, TiffAxes, load_label_stack, load_stack, write_f32_tiff,
    write_mask_coloured,
};

mod common;
use common::engine::tempdir;
use common::run_cli;

/// Writes the corpus into `dir`: every pixel of plane (t, z, c) holds `100 t + 10 z + c`.
const CORPUS: &str = r#"
import sys, numpy as np, tifffile
d = sys.argv[1]
def vol(t, z, c):
    a = np.zeros((t, z, c, 6, 5), np.uint16)
    for i in range(t):
        for j in range(z):
            for k in range(c):
                a[i, j, k] = 100 * i + 10 * j + k
    return a
tifffile.imwrite(f'{d}/zcyx.tif', vol(1, 3, 2)[0], imagej=True,
                 metadata={'axes': 'ZCYX', 'spacing': 0.5, 'unit': 'um'}, resolution=(5.0, 4.0))
tifffile.imwrite(f'{d}/tzcyx.tif', vol(2, 3, 2), imagej=True, metadata={'axes': 'TZCYX'})
tifffile.imwrite(f'{d}/cyx.tif', vol(1, 1, 3)[0, 0], imagej=True, metadata={'axes': 'CYX'})
# OME: tifffile writes the axes in the order given (DimensionOrder XYCZT for ZCYX, XYZCT
# for CZYX).
tifffile.imwrite(f'{d}/ome_zc.tif', vol(1, 3, 2)[0], ome=True,
                 metadata={'axes': 'ZCYX', 'PhysicalSizeX': 0.25, 'PhysicalSizeY': 0.25,
                           'PhysicalSizeZ': 2.0})
tifffile.imwrite(f'{d}/ome_cz.tif', np.moveaxis(vol(1, 3, 2)[0], 1, 0), ome=True,
                 metadata={'axes': 'CZYX', 'Channel': {'Name': ['DAPI', 'GFP']}})
rgb = np.zeros((6, 5, 3), np.uint8)
rgb[..., 0], rgb[..., 1], rgb[..., 2] = 10, 20, 30
tifffile.imwrite(f'{d}/rgb.tif', rgb, photometric='rgb')
grey_rgb = np.zeros((6, 5, 3), np.uint8) + 7
tifffile.imwrite(f'{d}/grey_rgb.tif', grey_rgb, photometric='rgb')
tifffile.imwrite(f'{d}/big.tif', vol(1, 4, 1)[0, :, 0], bigtiff=True, photometric='minisblack')
tifffile.imwrite(f'{d}/be.tif', vol(1, 4, 1)[0, :, 0], byteorder='>', photometric='minisblack')
# ImageJ says 2 channels x 3 slices = 6 images, the file has 5 pages.
tifffile.imwrite(f'{d}/bad.tif', vol(1, 5, 1)[0, :, 0], photometric='minisblack',
                 description='ImageJ=1.11a\nimages=6\nchannels=2\nslices=3\nhyperstack=true\n',
                 metadata=None)
bits = np.zeros((6, 5), bool)
bits[2:4, 1:3] = True
tifffile.imwrite(f'{d}/bit1.tif', bits)
tifffile.imwrite(f'{d}/planar.tif', np.zeros((3, 6, 5), np.uint8), photometric='rgb',
                 planarconfig='separate')
print('ok')
"#;

fn corpus(tag: &str) -> Option<PathBuf> {
    let dir = tempdir(tag);
    common::run_tifffile(CORPUS, &dir.to_string_lossy())?;
    Some(dir)
}

/// The value every pixel of plane (t, z, c) holds.
fn value(t: usize, z: usize, c: usize) -> f32 {
    (100 * t + 10 * z + c) as f32
}

/// Checks that every plane of the stack at `path` holds the value of its (t, z, c).
fn check_order(path: &Path, (t, z, c): (usize, usize, usize)) {
    let s = load_stack(path).unwrap();
    assert_eq!(
        (s.channels, s.depth(), s.frames),
        (c, z, t),
        "{}",
        path.display()
    );
    assert_eq!((s.width, s.height), (5, 6));
    for ti in 0..t {
        for zi in 0..z {
            for ci in 0..c {
                let got = s.image(ti * z + zi).unwrap()[ci].data[7];
                assert_eq!(
                    got,
                    value(ti, zi, ci),
                    "{} t{ti} z{zi} c{ci}",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn hyperstacks_ome_rgb_bigtiff_and_big_endian_read_with_their_axes() {
    let Some(d) = corpus("axes-corpus") else {
        return;
    };
    check_order(&d.join("zcyx.tif"), (1, 3, 2));
    check_order(&d.join("tzcyx.tif"), (2, 3, 2));
    check_order(&d.join("cyx.tif"), (1, 1, 3));
    check_order(&d.join("ome_zc.tif"), (1, 3, 2));
    check_order(&d.join("ome_cz.tif"), (1, 3, 2));
    check_order(&d.join("big.tif"), (1, 4, 1));
    check_order(&d.join("be.tif"), (1, 4, 1));
    // Pixel sizes: ImageJ's resolution tags with its unit and spacing; OME's PhysicalSize.
    let ij = load_stack(&d.join("zcyx.tif")).unwrap().pixel_size.unwrap();
    assert_eq!(
        (ij.x, ij.y, ij.z, ij.unit.as_str()),
        (0.2, 0.25, Some(0.5), "µm")
    );
    let ome = load_stack(&d.join("ome_zc.tif"))
        .unwrap()
        .pixel_size
        .unwrap();
    assert_eq!((ome.x, ome.y, ome.z), (0.25, 0.25, Some(2.0)));
    // OME channel names, shown by the app; a file without them says "channel 2".
    let named = load_stack(&d.join("ome_cz.tif")).unwrap();
    assert_eq!(named.channel_names, ["DAPI", "GFP"]);
    assert_eq!(named.channel_label(1), "channel 2 (GFP)");
    let unnamed = load_stack(&d.join("ome_zc.tif")).unwrap();
    assert!(
        unnamed.channel_names.iter().all(String::is_empty),
        "{:?}",
        unnamed.channel_names
    );
    assert_eq!(unnamed.channel_label(1), "channel 2");
    // Colour: three channels; a grey image saved as colour stays one channel.
    let rgb = load_stack(&d.join("rgb.tif")).unwrap();
    assert_eq!((rgb.channels, rgb.slices()), (3, 1));
    let px: Vec<f32> = (0..3).map(|c| rgb.image(0).unwrap()[c].data[0]).collect();
    assert_eq!(px, [10.0, 20.0, 30.0]);
    let grey = load_stack(&d.join("grey_rgb.tif")).unwrap();
    assert_eq!(
        (grey.channels, grey.all_planes().unwrap()[0].data[0]),
        (1, 7.0)
    );
    // A 1-bit mask: its bits, pixel by pixel (rows start on a byte).
    let bits = load_label_stack(&d.join("bit1.tif")).unwrap();
    let on: Vec<usize> = (0..30).filter(|&i| bits[0].data[i] == 1).collect();
    assert_eq!(on, [11, 12, 16, 17]);
    assert!(bits[0].data.iter().all(|&v| v <= 1));
}

#[test]
fn descriptions_that_disagree_and_unsupported_layouts_are_refused_by_name() {
    let Some(d) = corpus("axes-bad") else {
        return;
    };
    let e = load_stack(&d.join("bad.tif")).unwrap_err().to_string();
    assert!(
        e.contains("bad.tif") && e.contains("= 6 pages, but the file has 5"),
        "{e}"
    );
    let e = load_stack(&d.join("planar.tif")).unwrap_err().to_string();
    assert!(
        e.contains("planar.tif") && e.contains("planar configuration"),
        "{e}"
    );
    // Labels have one plane per slice: a 2-channel file is not a label image.
    let e = load_label_stack(&d.join("zcyx.tif"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("zcyx.tif") && e.contains("2 channels"), "{e}");
}

#[test]
fn exports_keep_time_points_and_the_pixel_size() {
    let dir = tempdir("axes-export");
    let axes = TiffAxes {
        frames: 2,
        pixel_size: Some(PixelSize {
            x: 0.2,
            y: 0.25,
            z: Some(0.5),
            unit: "µm".into(),
        }),
    };
    // 2 T x 3 Z masks, and probabilities with 2 classes per slice.
    let masks: Vec<Plane<u16>> = (0..6).map(|i| Plane::filled(5, 4, i as u16)).collect();
    write_mask_coloured(&dir.join("m.tif"), &masks, MaskStyle::Classes, &[], &axes).unwrap();
    let probs: Vec<Plane<f32>> = (0..12).map(|i| Plane::filled(5, 4, i as f32)).collect();
    write_f32_tiff(&dir.join("p.tif"), &probs, 2, &axes).unwrap();
    // Read back by us: the same axes and scale.
    let m = load_stack(&dir.join("m.tif")).unwrap();
    assert_eq!((m.channels, m.depth(), m.frames), (1, 3, 2));
    assert_eq!(m.pixel_size.as_ref(), axes.pixel_size.as_ref());
    let p = load_stack(&dir.join("p.tif")).unwrap();
    assert_eq!((p.channels, p.depth(), p.frames), (2, 3, 2));
    assert_eq!(p.image(4).unwrap()[1].data[0], 9.0);
    // And by tifffile, as Fiji users' scripts read them.
    const SCRIPT: &str = r#"
import sys, tifffile
for name, shape in (('m.tif', (2, 3, 4, 5)), ('p.tif', (2, 3, 2, 4, 5))):
    with tifffile.TiffFile(sys.argv[1] + '/' + name) as t:
        a = t.asarray()
        assert a.shape == shape, (name, a.shape)
        meta = t.imagej_metadata
        assert meta['unit'] in ('micron', 'um', '\\u00B5m'), meta
        assert abs(meta['spacing'] - 0.5) < 1e-9, meta
        x = t.pages[0].tags['XResolution'].value
        y = t.pages[0].tags['YResolution'].value
        assert abs(x[0] / x[1] - 5.0) < 1e-6 and abs(y[0] / y[1] - 4.0) < 1e-6, (x, y)
print('ok')
"#;
    if let Some(out) = common::run_tifffile(SCRIPT, &dir.to_string_lossy()) {
        assert!(out.contains("ok"), "{out}");
    }
}

/// Three 2-channel slices of real EM data: each slice and its inverted copy (a channel that
/// differs from the first everywhere), written as an ImageJ hyperstack, with full labels.
fn two_channel_stack(dir: &Path) -> (PathBuf, PathBuf) {
    let sample = common::engine::sample_dir();
    let mut planes = Vec::new();
    let mut labels = Vec::new();
    for s in 0..3 {
        let name = format!("slice{s:02}.png");
        let img = load_stack(&sample.join("images").join(&name)).unwrap();
        let crop = img.all_planes().unwrap()[0].crop_mirrored(100, 100, 128, 96);
        let inverted = crop.map(|v| 255.0 - v);
        planes.push(crop);
        planes.push(inverted);
        let lab = load_label_stack(&sample.join("labels").join(&name)).unwrap();
        labels.push(
            lab[0]
                .crop_mirrored(100, 100, 128, 96)
                .map(|v| if v > 0 { 2u16 } else { 1 }),
        );
    }
    let (images, truth) = (dir.join("two.tif"), dir.join("two-labels.tif"));
    write_f32_tiff(&images, &planes, 2, &TiffAxes::default()).unwrap();
    write_mask_coloured(
        &truth,
        &labels,
        MaskStyle::Classes,
        &[],
        &TiffAxes::default(),
    )
    .unwrap();
    (images, truth)
}

#[test]
fn a_two_channel_model_trains_predicts_and_refuses_a_grey_stack() {
    let dir = tempdir("axes-two-channel");
    let (images, truth) = two_channel_stack(&dir);
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let model = dir.join("model");
    let (ok, err) = common::quick_train(&images, &truth, &model, &[]);
    assert!(ok, "{err}");
    assert!(err.contains("2 channels x 3 slices"), "{err}");
    let cfg = unet_studio::ml::load_checkpoint(&model).unwrap().meta.unet;
    assert_eq!(
        (cfg.in_channels, cfg.input_channels.clone()),
        (2, vec![0, 1])
    );
    let mask = dir.join("mask.tif");
    let (ok, err) = common::quick_predict(&model, &images, &mask, &["--tta", "1"]);
    assert!(ok, "{err}");
    let m = load_label_stack(&mask).unwrap();
    assert_eq!((m.len(), m[0].width, m[0].height), (3, 128, 96));
    // The first channel alone: the model reads two and says so, naming the file.
    let grey = dir.join("grey.tif");
    let first: Vec<Plane<f32>> = load_stack(&images)
        .unwrap()
        .all_planes()
        .unwrap()
        .iter()
        .cloned()
        .step_by(2)
        .collect();
    write_f32_tiff(&grey, &first, 1, &TiffAxes::default()).unwrap();
    let (ok, err) = common::quick_predict(&model, &grey, &dir.join("m2.tif"), &[]);
    assert!(
        !ok && err.contains("grey.tif") && err.contains("channel"),
        "{err}"
    );
    // A grey model on the 2-channel stack: which channel is not guessed, unless the user
    // picks one.
    let grey_model = s(&common::engine::sample_dir().join("../model"));
    let with_grey_model = |extra: &[&str]| {
        let out = s(&dir.join("m3.tif"));
        let mut args = vec!["predict", "--model", &grey_model, "--input"];
        let input = s(&images);
        args.extend([
            input.as_str(),
            "--output",
            &out,
            "--device",
            "cpu",
            "--tta",
            "1",
        ]);
        args.extend(extra);
        run_cli(&args)
    };
    let (ok, err) = with_grey_model(&[]);
    assert!(
        !ok && err.contains("two.tif") && err.contains("--channels"),
        "{err}"
    );
    let (ok, err) = with_grey_model(&["--channels", "0"]);
    assert!(ok, "{err}");
}

#[test]
fn the_second_channel_feeds_the_network() {
    use unet_studio::ml::infer::predict_probabilities;
    use unet_studio::ml::{CancelToken, StartFrom, TrainSet, device::cpu_device, train};
    let (img, lab) = common::engine::em_crop(0, 100, 100, 96);
    let inverted = img.map(|v| -v);
    let set = TrainSet {
        images: vec![vec![img.clone(), inverted.clone()]],
        labels: vec![lab],
        held_out: Vec::new(),
    };
    let unet = common::engine::lite().with_input_channels(vec![0, 1]);
    let cpu = cpu_device();
    let out = train(
        &set,
        &common::engine::quick_cfg(3, 1),
        StartFrom::Scratch(unet.clone()),
        &cpu,
        None,
        &CancelToken::new(),
        &mut |_| {},
    )
    .unwrap();
    let predict = |image: &[Plane<f32>]| {
        predict_probabilities(
            &out.model,
            &unet,
            image,
            36,
            &cpu.device,
            &CancelToken::new(),
            &mut |_, _| {},
        )
    };
    let both = predict(&[img.clone(), inverted]).unwrap();
    let blank = predict(&[img.clone(), Plane::filled(img.width, img.height, 0.0)]).unwrap();
    let diff: f32 = both[1]
        .data
        .iter()
        .zip(&blank[1].data)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(
        diff > 1e-4,
        "the prediction ignores channel 2 (max difference {diff})"
    );
    // One channel for a two-channel network: refused, not guessed.
    let e = predict(std::slice::from_ref(&img)).unwrap_err().to_string();
    assert!(e.contains("takes 2 channel(s) but the image has 1"), "{e}");
}
