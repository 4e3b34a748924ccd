//! End-to-end checks of the engine: tiled inference, CPU/GPU agreement, training on real
//! data, cancellation, checkpoints, the loss's treatment of unlabelled pixels.

use burn::prelude::*;
use unet_studio::data::Plane;
use unet_studio::ml::checkpoint::{Checkpoint, CheckpointMeta, encode_checkpoint};
use unet_studio::ml::device::cpu_device;
use unet_studio::ml::infer::{plane_tensor, tensor_values};
use unet_studio::ml::{
    CancelToken, DeviceChoice, OptimizerConfig, Preset, StartFrom, TrainEvent, TrainSet,
    UNetConfig, load_checkpoint, predict_probabilities, save_checkpoint, select_device, train,
    weighted_cross_entropy,
};

mod common;
use common::engine::{em_crop, lite, probabilities, quick_cfg, sample_dir, tempdir};

#[test]
fn tiled_prediction_equals_whole_image_prediction() {
    let cpu = cpu_device();
    let cfg = lite();
    let model = cfg.init(&cpu.device);
    // 100 is a valid output edge of the lite net: one tile covers the whole image.
    let (img, _) = em_crop(0, 100, 80, 100);
    let cancel = CancelToken::new();
    let whole = probabilities(&model, &cfg, &img, 100);
    let mut tiles = 0;
    let tiled = predict_probabilities(
        &model,
        &cfg,
        std::slice::from_ref(&img),
        36,
        &cpu.device,
        &cancel,
        &mut |_, t| tiles = t,
    )
    .unwrap();
    assert_eq!(
        tiles, 9,
        "36 px tiles over 100 px: origins 0, 32, 64 per axis"
    );
    let mut max_diff = 0.0f32;
    for (a, b) in whole.iter().zip(&tiled) {
        for (x, y) in a.data.iter().zip(&b.data) {
            max_diff = max_diff.max((x - y).abs());
        }
    }
    assert!(max_diff < 1e-4, "tiled vs whole: {max_diff}");
    // Probabilities sum to one.
    for i in [0, 517, 9999] {
        let s: f32 = whole.iter().map(|p| p.data[i]).sum();
        assert!((s - 1.0).abs() < 1e-5);
    }
}

#[test]
fn odd_and_tiny_images_are_predicted_at_their_size() {
    let cpu = cpu_device();
    let cfg = lite();
    let model = cfg.init(&cpu.device);
    for (w, h) in [(7usize, 5usize), (45, 13), (1, 1)] {
        let img =
            Plane::from_vec(w, h, (0..w * h).map(|i| (i % 7) as f32 / 7.0).collect()).unwrap();
        let p = probabilities(&model, &cfg, &img, 36);
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].width, p[0].height), (w, h));
        assert!(p[0].data.iter().all(|v| v.is_finite()));
    }
}

#[test]
fn paper_net_maps_572_to_388_on_the_backend() {
    // Shape only: the same config the tile geometry is computed from.
    let cpu = cpu_device();
    let cfg = UNetConfig::preset(Preset::Paper, 2);
    assert_eq!(cfg.geometry().output_size(572), Some(388));
    // A depth-1 paper-style net is cheap enough to run: 2 poolings fewer, same rules.
    let small = UNetConfig {
        depth: 2,
        base_channels: 4,
        ..cfg
    };
    let out_edge = small.geometry().output_size(92).unwrap();
    let model = small.init(&cpu.device);
    let y = model.forward(Tensor::zeros([1, 1, 92, 92], &cpu.device));
    assert_eq!(y.dims(), [1, 2, out_edge, out_edge]);
}

#[test]
fn loss_ignores_unlabelled_pixels() {
    let dev = cpu_device().device;
    let classes = Plane::from_vec(4, 1, vec![1u8, 0, 2, 0]).unwrap();
    let weights = Plane::from_vec(4, 1, vec![1.0f32, 0.0, 2.0, 0.0]).unwrap();
    let (t, w) = unet_studio::ml::train::target_tensors(&classes, &weights, 2, &dev);
    let logits_a = vec![
        0.3f32, 5.0, -1.0, 2.0, /* class 2 */ 0.1, -3.0, 0.7, 9.0,
    ];
    let mut logits_b = logits_a.clone();
    logits_b[1] = -40.0; // unlabelled pixel 1, class 1
    logits_b[7] = 80.0; // unlabelled pixel 3, class 2
    let la = weighted_cross_entropy(
        Tensor::from_data(TensorData::new(logits_a.clone(), [1, 2, 1, 4]), &dev),
        t.clone(),
        w.clone(),
    );
    let lb = weighted_cross_entropy(
        Tensor::from_data(TensorData::new(logits_b, [1, 2, 1, 4]), &dev),
        t,
        w,
    );
    let (a, b) = (tensor_values(la).unwrap()[0], tensor_values(lb).unwrap()[0]);
    assert_eq!(a, b);
    // And it is the weighted mean of -log softmax at the labelled pixels, by hand.
    let nll = |z1: f32, z2: f32, k: usize| {
        let m = z1.max(z2);
        let lse = m + ((z1 - m).exp() + (z2 - m).exp()).ln();
        lse - if k == 1 { z1 } else { z2 }
    };
    let expect = (1.0 * nll(0.3, 0.1, 1) + 2.0 * nll(-1.0, 0.7, 2)) / 3.0;
    assert!((a - expect).abs() < 1e-5, "{a} vs {expect}");
}

#[test]
fn cpu_and_gpu_forward_agree() {
    let gpu = select_device(DeviceChoice::Gpu).unwrap_or_else(|e| {
        panic!("{e}: the wgpu tests need a Vulkan driver; on Debian install mesa-vulkan-drivers")
    });
    eprintln!("{}", gpu.description);
    let cpu = cpu_device();
    let cfg = lite();
    let model_cpu = cfg.init(&cpu.device);
    // The same weights on the GPU, through a checkpoint (also exercises the record path).
    let ck = Checkpoint::of_model(CheckpointMeta::new(cfg.clone(), 0, ""), &model_cpu).unwrap();
    let model_gpu = ck.model(&gpu.device).unwrap();
    let (img, _) = em_crop(0, 0, 0, 188);
    let a = tensor_values(model_cpu.forward(plane_tensor(&img, &cpu.device))).unwrap();
    let b = tensor_values(model_gpu.forward(plane_tensor(&img, &gpu.device))).unwrap();
    assert_close(&a, &b, 1e-3, "CPU vs GPU logits");
}

/// Asserts two tensors' values differ by less than `tol` everywhere.
fn assert_tensors_close(a: Tensor<4>, e: Tensor<4>, tol: f32, what: &str) {
    assert_close(
        &tensor_values(a).unwrap(),
        &tensor_values(e).unwrap(),
        tol,
        what,
    )
}

/// Asserts two value lists have one length and differ by less than `tol` everywhere.
fn assert_close(a: &[f32], e: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), e.len(), "{what}: lengths");
    let max = a
        .iter()
        .zip(e)
        .map(|(p, q)| (p - q).abs())
        .fold(0.0f32, f32::max);
    assert!(max < tol, "{what}: max difference {max}");
}

fn tiny_set() -> TrainSet {
    let (img, lab) = em_crop(0, 128, 128, 160);
    TrainSet {
        images: vec![vec![img]],
        labels: vec![lab],
        held_out: Vec::new(),
    }
}

#[test]
fn training_lowers_the_loss_on_real_em_data() {
    let set = tiny_set();
    let cpu = cpu_device();
    let mut cfg = quick_cfg(60, 3);
    cfg.augment.elastic = true;
    let out = train(
        &set,
        &cfg,
        StartFrom::Scratch(lite()),
        &cpu,
        None,
        &CancelToken::new(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(out.losses.len(), 60);
    let first: f32 = out.losses[..10].iter().sum::<f32>() / 10.0;
    let last: f32 = out.losses[50..].iter().sum::<f32>() / 10.0;
    assert!(
        last < 0.85 * first,
        "loss did not decrease: first {first}, last {last}"
    );
}

#[test]
fn paper_sgd_momentum_trains_too() {
    let set = tiny_set();
    let cpu = cpu_device();
    let mut cfg = quick_cfg(60, 3);
    cfg.optimizer = OptimizerConfig::paper();
    let out = train(
        &set,
        &cfg,
        StartFrom::Scratch(lite()),
        &cpu,
        None,
        &CancelToken::new(),
        &mut |_| {},
    )
    .unwrap();
    let first: f32 = out.losses[..10].iter().sum::<f32>() / 10.0;
    let last: f32 = out.losses[50..].iter().sum::<f32>() / 10.0;
    assert!(
        last < first,
        "SGD momentum 0.99: first {first}, last {last}"
    );
}

#[test]
fn cancelling_stops_within_one_iteration_and_keeps_a_checkpoint() {
    let set = tiny_set();
    let cpu = cpu_device();
    let dir = tempdir("cancel");
    let cancel = CancelToken::new();
    let c2 = cancel.clone();
    let mut seen = Vec::new();
    let out = train(
        &set,
        &quick_cfg(50, 3),
        StartFrom::Scratch(lite()),
        &cpu,
        Some(&dir),
        &cancel,
        &mut |e| {
            if let TrainEvent::Iteration { iteration, .. } = e {
                seen.push(iteration);
                if iteration == 3 {
                    c2.cancel();
                }
            }
        },
    )
    .unwrap();
    assert!(out.cancelled);
    assert_eq!(out.iteration, 3);
    assert_eq!(seen, vec![1, 2, 3]);
    let ck = load_checkpoint(&dir).unwrap();
    assert_eq!(ck.meta.iteration, 3);
}

#[test]
fn pausing_holds_training_between_iterations_until_resumed() {
    let cancel = CancelToken::new();
    let (tx, rx) = std::sync::mpsc::channel();
    let c = cancel.clone();
    let run = std::thread::spawn(move || {
        train(
            &tiny_set(),
            &quick_cfg(5, 3),
            StartFrom::Scratch(lite()),
            &cpu_device(),
            None,
            &c,
            &mut |e| {
                if let TrainEvent::Iteration { iteration, .. } = e {
                    if iteration == 2 {
                        c.set_paused(true);
                    }
                    tx.send(iteration).unwrap();
                }
            },
        )
    });
    assert_eq!(rx.recv().unwrap(), 1);
    assert_eq!(rx.recv().unwrap(), 2);
    // Paused after iteration 2: nothing arrives until resumed.
    assert!(
        rx.recv_timeout(std::time::Duration::from_millis(500))
            .is_err()
    );
    cancel.set_paused(false);
    let rest: Vec<u64> = rx.iter().collect();
    assert_eq!(rest, vec![3, 4, 5]);
    let out = run.join().unwrap().unwrap();
    assert_eq!(out.iteration, 5);
    assert!(!out.cancelled);
}

#[test]
fn checkpoint_round_trips_bit_exactly_and_resumes() {
    let set = tiny_set();
    let cpu = cpu_device();
    let dir = tempdir("roundtrip");
    let out = train(
        &set,
        &quick_cfg(4, 3),
        StartFrom::Scratch(lite()),
        &cpu,
        Some(&dir),
        &CancelToken::new(),
        &mut |_| {},
    )
    .unwrap();
    let ck = load_checkpoint(&dir).unwrap();
    let loaded = ck.model(&cpu.device).unwrap();
    let meta = ck.meta.clone();
    let again = encode_checkpoint(&meta, &loaded, None).unwrap();
    let orig = encode_checkpoint(&meta, &out.model, None).unwrap();
    assert_eq!(again, orig, "weights differ after a save/load round trip");
    let (img, _) = em_crop(0, 0, 0, 188);
    let a = tensor_values(out.model.forward(plane_tensor(&img, &cpu.device))).unwrap();
    let b = tensor_values(loaded.forward(plane_tensor(&img, &cpu.device))).unwrap();
    assert_eq!(a, b);
    // Resume continues the iteration count with the saved optimiser state.
    let resumed = train(
        &set,
        &quick_cfg(2, 3),
        StartFrom::Resume(Box::new(ck)),
        &cpu,
        Some(&dir),
        &CancelToken::new(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(resumed.iteration, 6);
    assert_eq!(load_checkpoint(&dir).unwrap().meta.iteration, 6);
    // burn restored the optimiser state on `Device::default()`: that must not have taken the
    // GPU's place (BURN_DEVICE=flex, .cargo/config.toml and main), or the GPU is lost.
    assert_eq!(std::env::var("BURN_DEVICE").as_deref(), Ok("flex"));
    let gpu = select_device(DeviceChoice::Gpu);
    assert!(gpu.is_ok(), "{:?}", gpu.err());
    // Saving over an existing checkpoint leaves no temporary files behind.
    save_checkpoint(&dir, &meta, &loaded, None).unwrap();
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
}

#[test]
fn empty_labels_are_refused() {
    let (img, mut lab) = em_crop(0, 0, 0, 64);
    lab.classes.data.iter_mut().for_each(|c| *c = 0);
    let set = TrainSet {
        images: vec![vec![img]],
        labels: vec![lab],
        held_out: Vec::new(),
    };
    let err = train(
        &set,
        &quick_cfg(2, 3),
        StartFrom::Scratch(lite()),
        &cpu_device(),
        None,
        &CancelToken::new(),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("no labelled pixels"), "{err}");
}

/// Gradients through the convolution extension equal burn's own `conv2d` gradients.
fn extension_matches_burn_conv(device: &Device) {
    use burn::tensor::Distribution;
    use burn::tensor::module::conv2d;
    use burn::tensor::ops::ConvOptions;
    let ad = device.clone().autodiff();
    // Without and with the fused ReLU (against burn's relu after burn's convolution).
    for fused in [false, true] {
        let x =
            Tensor::<4>::random([2, 3, 13, 11], Distribution::Normal(0.0, 1.0), &ad).require_grad();
        let w =
            Tensor::<4>::random([4, 3, 3, 3], Distribution::Normal(0.0, 0.5), &ad).require_grad();
        let b = Tensor::<1>::random([4], Distribution::Normal(0.0, 0.5), &ad).require_grad();
        let r = Tensor::<4>::random([2, 4, 11, 9], Distribution::Normal(0.0, 1.0), &ad);
        let ours = if fused {
            unet_studio::ml::ops::conv3x3_relu(x.clone(), w.clone(), b.clone())
        } else {
            unet_studio::ml::ops::conv3x3(x.clone(), w.clone(), b.clone())
        };
        let reference = conv2d(
            x.clone(),
            w.clone(),
            Some(b.clone()),
            ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
        );
        let reference = if fused {
            burn::tensor::activation::relu(reference)
        } else {
            reference
        };
        if fused {
            let v = tensor_values(ours.clone()).unwrap();
            assert!(v.iter().all(|&a| a >= 0.0) && v.contains(&0.0) && v.iter().any(|&a| a > 0.0));
        }
        let close = |a: Vec<f32>, e: Vec<f32>, what: &str| assert_close(&a, &e, 1e-3, what);
        close(
            tensor_values(ours.clone()).unwrap(),
            tensor_values(reference.clone()).unwrap(),
            "forward",
        );
        let g1 = (ours * r.clone()).sum().backward();
        let (gx1, gw1, gb1) = (
            x.grad(&g1).unwrap(),
            w.grad(&g1).unwrap(),
            b.grad(&g1).unwrap(),
        );
        let g2 = (reference * r).sum().backward();
        let (gx2, gw2, gb2) = (
            x.grad(&g2).unwrap(),
            w.grad(&g2).unwrap(),
            b.grad(&g2).unwrap(),
        );
        close(
            tensor_values(gx1).unwrap(),
            tensor_values(gx2).unwrap(),
            "input gradient",
        );
        close(
            tensor_values(gw1).unwrap(),
            tensor_values(gw2).unwrap(),
            "weight gradient",
        );
        close(
            tensor_values(gb1).unwrap(),
            tensor_values(gb2).unwrap(),
            "bias gradient",
        );
    }
}

/// The up-convolution extension against burn's transposed convolution: values and the
/// gradients of input, weight and bias.
fn up_extension_matches_burn(device: &burn::prelude::Device) {
    use burn::tensor::Distribution;
    use burn::tensor::module::conv_transpose2d;
    use burn::tensor::ops::ConvTransposeOptions;
    let ad = device.clone().autodiff();
    let x = Tensor::<4>::random([2, 5, 6, 7], Distribution::Normal(0.0, 1.0), &ad).require_grad();
    let w = Tensor::<4>::random([5, 3, 2, 2], Distribution::Normal(0.0, 0.5), &ad).require_grad();
    let b = Tensor::<1>::random([3], Distribution::Normal(0.0, 0.5), &ad).require_grad();
    let r = Tensor::<4>::random([2, 3, 12, 14], Distribution::Normal(0.0, 1.0), &ad);
    let ours = unet_studio::ml::ops::up2x2(x.clone(), w.clone(), b.clone());
    let reference = conv_transpose2d(
        x.clone(),
        w.clone(),
        Some(b.clone()),
        ConvTransposeOptions::new([2, 2], [0, 0], [0, 0], [1, 1], 1),
    );
    let close = |a: Tensor<4>, e: Tensor<4>, what: &str| {
        let (a, e) = (tensor_values(a).unwrap(), tensor_values(e).unwrap());
        assert_eq!(a.len(), e.len(), "{what}");
        let max = a
            .iter()
            .zip(&e)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0f32, f32::max);
        assert!(max < 1e-3, "{what}: max difference {max}");
    };
    close(ours.clone(), reference.clone(), "up-convolution");
    let g1 = (ours * r.clone()).sum().backward();
    let g2 = (reference * r).sum().backward();
    close(x.grad(&g1).unwrap(), x.grad(&g2).unwrap(), "input gradient");
    close(
        w.grad(&g1).unwrap(),
        w.grad(&g2).unwrap(),
        "weight gradient",
    );
    let (gb1, gb2) = (b.grad(&g1).unwrap(), b.grad(&g2).unwrap());
    close(
        gb1.reshape([1, 1, 1, 3]),
        gb2.reshape([1, 1, 1, 3]),
        "bias gradient",
    );
}

/// The pooling extension against burn's `max_pool2d`: values and input gradients, on a map
/// with an odd height (the last row is dropped) and continuous values (no ties).
fn pool_extension_matches_burn(device: &Device) {
    use burn::tensor::Distribution;
    use burn::tensor::module::max_pool2d;
    use burn::tensor::ops::MaxPoolOptions;
    let ad = device.clone().autodiff();
    let x = Tensor::<4>::random([2, 3, 9, 8], Distribution::Normal(0.0, 1.0), &ad).require_grad();
    let r = Tensor::<4>::random([2, 3, 4, 4], Distribution::Normal(0.0, 1.0), &ad);
    let ours = unet_studio::ml::ops::max_pool2x2(x.clone());
    let reference = max_pool2d(x.clone(), MaxPoolOptions::new([2, 2]));
    assert_eq!(ours.dims(), reference.dims());
    let close = |a, e, what: &str| assert_tensors_close(a, e, 1e-6, what);
    close(ours.clone(), reference.clone(), "pooling");
    let g1 = (ours * r.clone()).sum().backward();
    let g2 = (reference * r).sum().backward();
    let (gx1, gx2) = (x.grad(&g1).unwrap(), x.grad(&g2).unwrap());
    // Every window passes exactly one gradient: the dropped row gets none.
    let dropped = tensor_values(gx1.clone().narrow(2, 8, 1)).unwrap();
    assert!(dropped.iter().all(|&v| v == 0.0));
    close(gx1, gx2, "pooling gradient");
}

/// The network's final 1x1 convolution as a matrix product against burn's `Conv2d`: class
/// scores and the gradients of the input, weights and bias, on a batch of two.
fn head_matches_burn_conv2d(device: &Device) {
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::Distribution;
    let ad = device.clone().autodiff();
    let head = Conv2dConfig::new([5, 3], [1, 1]).init(&ad);
    let x = Tensor::<4>::random([2, 5, 6, 7], Distribution::Normal(0.0, 1.0), &ad).require_grad();
    let r = Tensor::<4>::random([2, 3, 6, 7], Distribution::Normal(0.0, 1.0), &ad);
    let ours = unet_studio::ml::unet::classify(&head, x.clone());
    let reference = head.forward(x.clone());
    let close = |a, e, what: &str| assert_tensors_close(a, e, 1e-4, what);
    close(ours.clone(), reference.clone(), "class scores");
    let g1 = (ours * r.clone()).sum().backward();
    let g2 = (reference * r).sum().backward();
    close(x.grad(&g1).unwrap(), x.grad(&g2).unwrap(), "input gradient");
    let w = &head.weight;
    close(
        w.grad(&g1).unwrap(),
        w.grad(&g2).unwrap(),
        "weight gradient",
    );
    let b = head.bias.as_ref().unwrap();
    close(
        b.grad(&g1).unwrap().reshape([1, 1, 1, 3]),
        b.grad(&g2).unwrap().reshape([1, 1, 1, 3]),
        "bias gradient",
    );
}

/// The crop-and-concat extension against burn's `narrow` and `cat`: values and the gradients
/// of both inputs (the skip connection's is zero outside the window), on batches of one (where
/// `up`'s gradient is a view of the output's) and two, with a window off the centre by half a
/// pixel (odd margins round down); `up` comes out of another op, whose backward reads that
/// gradient.
fn crop_cat_matches_burn(device: &Device) {
    use burn::tensor::Distribution;
    let ad = device.clone().autodiff();
    for n in [1, 2] {
        let skip = Tensor::<4>::random([n, 3, 11, 12], Distribution::Normal(0.0, 1.0), &ad);
        let skip = skip.require_grad();
        let leaf = Tensor::<4>::random([n, 2, 6, 8], Distribution::Normal(0.0, 1.0), &ad);
        let leaf = leaf.require_grad();
        // One graph per backward pass (burn frees the tape it runs).
        let up = || leaf.clone().mul_scalar(2.0).exp();
        let r = Tensor::<4>::random([n, 5, 6, 8], Distribution::Normal(0.0, 1.0), &ad);
        let ours = unet_studio::ml::ops::crop_cat(skip.clone(), up());
        // Margins 5 and 4: the window starts at row 2, column 2.
        let window = skip.clone().narrow(2, 2, 6).narrow(3, 2, 8);
        let reference = Tensor::cat(vec![window, up()], 1);
        let close = |a, e, what: &str| assert_tensors_close(a, e, 1e-5, what);
        close(ours.clone(), reference.clone(), "crop and concatenation");
        let g1 = (ours * r.clone()).sum().backward();
        let g2 = (reference * r).sum().backward();
        let (gs1, gs2) = (skip.grad(&g1).unwrap(), skip.grad(&g2).unwrap());
        let outside = tensor_values(gs1.clone().narrow(2, 0, 2)).unwrap();
        assert!(outside.iter().all(|&v| v == 0.0));
        close(gs1, gs2, "skip gradient");
        close(
            leaf.grad(&g1).unwrap(),
            leaf.grad(&g2).unwrap(),
            "up gradient",
        );
    }
}

/// The loss as one operation against its composition of burn's operations: the value and
/// the gradient of the logits, on a batch of two with three classes, unlabelled pixels
/// (all-zero target) and uneven weights.
fn loss_matches_burn(device: &Device) {
    use burn::tensor::Distribution;
    use unet_studio::ml::loss::weighted_cross_entropy_composed;
    let ad = device.clone().autodiff();
    let (n, k, h, w) = (2, 3, 5, 7);
    let mut t = vec![0.0f32; n * k * h * w];
    let mut wt = vec![0.0f32; n * h * w];
    for b in 0..n {
        for i in 0..h * w {
            // Every fourth pixel unlabelled (weight 0 in the first item; in the second a
            // weight without a class, which counts in the normalisation only); classes in
            // turn; weights 0.5 .. 3.
            if (i + b) % 4 != 0 {
                t[(b * k + (i + b) % k) * h * w + i] = 1.0;
                wt[b * h * w + i] = 0.5 + (i % 6) as f32 * 0.5;
            } else {
                wt[b * h * w + i] = 0.25 * b as f32;
            }
        }
    }
    let target = Tensor::<4>::from_data(TensorData::new(t, [n, k, h, w]), &ad);
    let weights = Tensor::<4>::from_data(TensorData::new(wt, [n, 1, h, w]), &ad);
    let z = Tensor::<4>::random([n, k, h, w], Distribution::Normal(0.0, 3.0), &ad).require_grad();
    let ours = weighted_cross_entropy(z.clone(), target.clone(), weights.clone());
    let reference = weighted_cross_entropy_composed(z.clone(), target, weights);
    let (a, e) = (
        tensor_values(ours.clone().inner()).unwrap(),
        tensor_values(reference.clone().inner()).unwrap(),
    );
    assert_close(&a, &e, 1e-5, "loss");
    let (g1, g2) = (ours.backward(), reference.backward());
    assert_tensors_close(
        z.grad(&g1).unwrap(),
        z.grad(&g2).unwrap(),
        1e-6,
        "logit gradient",
    );
}

/// A level's skip connection as the U-Net wires it: one activation feeds both the 2x2
/// pooling and, cropped, the concatenation with an upsampled map computed from that pooling.
/// Its gradient is the sum of both paths' (handed between the two ops, added in one pass)
/// and must equal burn's; batches of one and two, an odd height (a dropped row).
fn skip_connection_gradient_matches_burn(device: &Device) {
    use burn::tensor::Distribution;
    use burn::tensor::module::max_pool2d;
    use burn::tensor::ops::MaxPoolOptions;
    use unet_studio::ml::ops::{crop_cat, max_pool2x2};
    let ad = device.clone().autodiff();
    for n in [1, 2] {
        let leaf = Tensor::<4>::random([n, 3, 13, 14], Distribution::Normal(0.0, 1.0), &ad);
        let leaf = leaf.require_grad();
        let r = Tensor::<4>::random([n, 9, 6, 7], Distribution::Normal(0.0, 1.0), &ad);
        let up_of = |p: Tensor<4>| Tensor::cat(vec![p.clone().exp(), p.mul_scalar(2.0)], 1);
        // An activation inside the graph, as a convolution's output is.
        let x = leaf.clone().mul_scalar(1.5);
        let ours = crop_cat(x.clone(), up_of(max_pool2x2(x)));
        let x = leaf.clone().mul_scalar(1.5);
        let pooled = max_pool2d(x.clone(), MaxPoolOptions::new([2, 2]));
        // Margins 7 and 7: the window starts at row 3, column 3.
        let window = x.narrow(2, 3, 6).narrow(3, 3, 7);
        let reference = Tensor::cat(vec![window, up_of(pooled)], 1);
        let close = |a, e, what: &str| assert_tensors_close(a, e, 1e-5, what);
        close(ours.clone(), reference.clone(), "level output");
        let g1 = (ours * r.clone()).sum().backward();
        let g2 = (reference * r).sum().backward();
        close(
            leaf.grad(&g1).unwrap(),
            leaf.grad(&g2).unwrap(),
            &format!("activation gradient, batch {n}"),
        );
    }
}

/// The dropout at the end of the contracting path: while training, every value is either
/// dropped (0) or scaled by `1 / keep`, about `keep` of them are kept, the gradient is the
/// same mask, and the same device seed gives the same mask; without autodiff (prediction)
/// and with the module's training flag off it is the identity.
fn dropout_masks_like_burn(device: &Device) {
    use burn::module::Module as _;
    use burn::nn::DropoutConfig;
    use burn::tensor::Distribution;
    use unet_studio::ml::ops::dropout;
    let d = DropoutConfig::new(0.25).init();
    let keep = 0.75f32;
    let ad = device.clone().autodiff();
    let shape = [1, 32, 40, 50];
    let x0 = Tensor::<4>::random(shape, Distribution::Uniform(1.0, 2.0), device);
    let masked = |seed: u64| {
        ad.seed(seed);
        let x = Tensor::<4>::from_data(x0.to_data(), &ad).require_grad();
        let y = dropout(&d, x.clone());
        let g = y.clone().sum().backward();
        (
            tensor_values(y.inner()).unwrap(),
            tensor_values(x.grad(&g).unwrap()).unwrap(),
        )
    };
    let xv = tensor_values(x0.clone()).unwrap();
    let (y, gx) = masked(7);
    let mut kept = 0usize;
    for ((&y, &g), &x) in y.iter().zip(&gx).zip(&xv) {
        if y == 0.0 {
            assert_eq!(g, 0.0, "a dropped value passes no gradient");
        } else {
            kept += 1;
            assert!((y - x / keep).abs() < 1e-5, "kept {x} -> {y}");
            assert!((g - 1.0 / keep).abs() < 1e-5, "kept gradient {g}");
        }
    }
    // 64 000 draws: the kept fraction's standard deviation is 0.0017.
    let fraction = kept as f32 / y.len() as f32;
    assert!((fraction - keep).abs() < 0.01, "kept fraction {fraction}");
    assert_eq!(masked(7).0, y, "same seed, same mask");
    assert_ne!(masked(8).0, y, "another seed, another mask");
    // Prediction (no autodiff) and a frozen module pass the input through.
    assert_eq!(tensor_values(dropout(&d, x0.clone())).unwrap(), xv);
    let frozen = d.clone().freeze();
    let x = Tensor::<4>::from_data(x0.to_data(), &ad);
    assert_eq!(tensor_values(dropout(&frozen, x).inner()).unwrap(), xv);
}

/// The fused SGD-momentum update against burn's `Sgd` (momentum 0.99, no dampening) on a conv
/// layer: equal weights after each of three steps, also when burn's optimiser state is handed
/// to ours halfway (the record names agree); a copy of the model taken before a step (as the
/// app's training previews are) keeps its weights although the update works in place.
fn sgd_momentum_matches_burn_sgd(device: &Device) {
    use burn::module::Param;
    use burn::optim::momentum::MomentumConfig;
    use burn::optim::{GradientsParams, SgdConfig};
    use burn::tensor::Distribution;
    use unet_studio::ml::layers::Conv3x3;
    let ad = device.clone().autodiff();
    // More weights than one parallel chunk of the CPU update (16 K).
    let w = Tensor::<4>::random([64, 32, 3, 3], Distribution::Normal(0.0, 0.1), device).to_data();
    let b = Tensor::<1>::random([64], Distribution::Normal(0.0, 0.1), device).to_data();
    let layer = || Conv3x3 {
        weight: Param::from_tensor(Tensor::from_data(w.clone(), &ad)),
        bias: Param::from_tensor(Tensor::from_data(b.clone(), &ad)),
        same: false,
    };
    let x = Tensor::<4>::random([1, 32, 8, 7], Distribution::Uniform(-1.0, 1.0), &ad);
    let grads = |l: &Conv3x3| {
        let y = l.forward(x.clone());
        GradientsParams::from_grads((y.clone() * y).mean().backward(), l)
    };
    let values = |l: &Conv3x3| {
        let mut v = tensor_values(l.weight.val().inner()).unwrap();
        v.extend(tensor_values(l.bias.val().inner()).unwrap());
        v
    };
    let burn_sgd = || {
        SgdConfig::new()
            .with_momentum(Some(
                MomentumConfig::new()
                    .with_momentum(0.99)
                    .with_dampening(0.0),
            ))
            .init()
    };
    let lr = 0.5;
    let (mut ours, mut reference) = (layer(), layer());
    let (mut o_opt, mut r_opt) = (OptimizerConfig::paper().init_optimizer(), burn_sgd());
    let mut handed_over = layer();
    let mut h_opt = burn_sgd();
    for step in 0..3 {
        let before = values(&ours);
        // Shared at one step only: the others update in place.
        let kept = (step == 1).then(|| ours.clone());
        let g = grads(&ours);
        ours = o_opt.step(lr, ours, g);
        let g = grads(&reference);
        reference = r_opt.step(lr, reference, g);
        let g = grads(&handed_over);
        handed_over = h_opt.step(lr, handed_over, g);
        if step == 1 {
            let record = h_opt.to_record();
            h_opt = OptimizerConfig::paper()
                .init_optimizer()
                .load_record(record);
        }
        let (o, r) = (values(&ours), values(&reference));
        assert_ne!(o, before, "step {step} changed nothing");
        assert_close(&o, &r, 1e-5, &format!("SGD step {step}"));
        assert_close(
            &values(&handed_over),
            &r,
            1e-5,
            &format!("handed over, step {step}"),
        );
        if let Some(kept) = kept {
            assert_eq!(
                values(&kept),
                before,
                "a copy taken before step {step} changed"
            );
        }
    }
}

#[test]
fn convolution_extension_gradients_match_burn_on_cpu() {
    extension_matches_burn_conv(&cpu_device().device);
    up_extension_matches_burn(&cpu_device().device);
    pool_extension_matches_burn(&cpu_device().device);
    head_matches_burn_conv2d(&cpu_device().device);
    crop_cat_matches_burn(&cpu_device().device);
    skip_connection_gradient_matches_burn(&cpu_device().device);
    loss_matches_burn(&cpu_device().device);
    dropout_masks_like_burn(&cpu_device().device);
    sgd_momentum_matches_burn_sgd(&cpu_device().device);
}

#[test]
fn convolution_extension_and_training_step_on_gpu() {
    let gpu = select_device(DeviceChoice::Gpu).unwrap_or_else(|e| {
        panic!("{e}: the wgpu tests need a Vulkan driver; on Debian install mesa-vulkan-drivers")
    });
    extension_matches_burn_conv(&gpu.device);
    up_extension_matches_burn(&gpu.device);
    pool_extension_matches_burn(&gpu.device);
    head_matches_burn_conv2d(&gpu.device);
    crop_cat_matches_burn(&gpu.device);
    skip_connection_gradient_matches_burn(&gpu.device);
    loss_matches_burn(&gpu.device);
    dropout_masks_like_burn(&gpu.device);
    sgd_momentum_matches_burn_sgd(&gpu.device);
    // Two real training steps on the GPU: autodiff routing, optimiser, read-back.
    let out = train(
        &tiny_set(),
        &quick_cfg(2, 3),
        StartFrom::Scratch(lite()),
        &gpu,
        None,
        &CancelToken::new(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(out.losses.len(), 2);
    assert!(out.losses.iter().all(|l| l.is_finite() && *l > 0.0));
}

#[test]
fn experiment_smoke_run_writes_every_row() {
    use unet_studio::experiment::{ExperimentConfig, markdown_report, run_experiment};
    let out = tempdir("experiment");
    let cfg = ExperimentConfig {
        data: sample_dir(),
        out: out.clone(),
        iterations: 3,
        preset: Preset::Lite,
        val_slices: 1,
        tile: 36,
        seed: 1,
        scribble_px: 100,
        paper_same_time: false,
        lr: 0.01,
        minutes: None,
        val_every: 0,
        tta: 2,
        runs: Vec::new(),
        score_only: false,
    };
    let results = run_experiment(&cfg, &cpu_device(), &CancelToken::new(), &mut |_| {}).unwrap();
    assert_eq!(results.len(), 4);
    // The sparse run really trains on few pixels: about 100 per class and slice, 2 slices.
    assert!(
        results[3].train_pixels <= 2 * 2 * 110,
        "{}",
        results[3].train_pixels
    );
    assert_eq!(results[0].train_pixels, 2 * 512 * 512);
    for r in &results {
        assert!(r.scores.pixel_error.value >= 0.0 && r.scores.pixel_error.value <= 1.0);
        assert!(load_checkpoint(&r.model).is_ok());
    }
    let md = markdown_report(&cfg, &results, "test", "test machine");
    assert!(
        md.contains("0.000353") && md.contains("sparse scribbles") && md.contains("no elastic")
    );
}
