//! Out of device memory for real: a wgpu device (software Vulkan) created with its buffer
//! limits lowered to 16 MiB, as a small GPU would have. The tile chosen from its limits fits;
//! a tile that does not fit fails inside burn's wgpu backend, and the retry with a smaller
//! tile finishes on the same device with the same result as the CPU. Its own test binary:
//! burn keeps one runtime per device for the life of the process.

use eframe::wgpu;
use unet_studio::data::{LabelEncoding, Plane, encode_labels, load_label_stack, load_stack};
use unet_studio::ml::device::cpu_device;
use unet_studio::ml::memory::{MemoryLimits, largest_fitting_tile, with_smaller_tiles};
use unet_studio::ml::{
    CancelToken, Checkpoint, CheckpointMeta, ComputeDevice, OptimizerConfig, Preset, StartFrom,
    TrainConfig, TrainSet, UNetConfig, predict_fitting, predict_probabilities, train_fitting,
};
use unet_studio::preprocess::{D4, normalize_percentile};

const LIMIT: u64 = 16 << 20;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}

/// A wgpu device whose buffers are limited to 16 MiB, registered with burn.
fn small_gpu() -> ComputeDevice {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter = block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
        .expect("a Vulkan adapter (mesa-vulkan-drivers)");
    let mut limits = adapter.limits();
    limits.max_buffer_size = LIMIT;
    limits.max_storage_buffer_binding_size = LIMIT;
    let (device, queue) = block_on(
        adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("small device"),
            required_features: adapter
                .features()
                .difference(wgpu::Features::MAPPABLE_PRIMARY_BUFFERS),
            required_limits: limits,
            ..Default::default()
        }),
    )
    .expect("device");
    let info = adapter.get_info();
    let setup = burn::tensor::wgpu::WgpuSetup {
        instance,
        adapter,
        device,
        queue,
        backend: info.backend,
    };
    let device = burn::prelude::Device::wgpu_options()
        .setup(setup)
        .init()
        .expect("burn on the small device");
    ComputeDevice {
        device,
        is_gpu: true,
        description: format!("{} limited to 16 MiB buffers", info.name),
        fallback_reason: None,
        software: true,
        memory: MemoryLimits::gpu(LIMIT, LIMIT, true),
    }
}

fn em_slice(size: usize) -> (Plane<f32>, Plane<u32>) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/isbi2012");
    let stack = load_stack(&dir.join("images/slice00.png")).unwrap();
    let labels = load_label_stack(&dir.join("labels/slice00.png")).unwrap();
    let img = normalize_percentile(&stack.image(0).unwrap()[0]).crop_mirrored(60, 40, size, size);
    (img, labels[0].crop_mirrored(60, 40, size, size))
}

#[test]
fn out_of_memory_retries_with_a_smaller_tile_on_the_same_device() {
    let gpu = small_gpu();
    let unet = UNetConfig::preset(Preset::Lite, 2);
    // From the limits: the first 16-channel map of a 508 px input (324 px output) is 15.6 MiB.
    assert_eq!(largest_fitting_tile(&unet, &gpu.memory, false, 388), 324);

    let cpu = cpu_device();
    let model_cpu = unet.init(&cpu.device);
    let ckpt = Checkpoint::of_model(CheckpointMeta::new(unet.clone(), 0, ""), &model_cpu).unwrap();
    let model_gpu = ckpt.model(&gpu.device).unwrap();

    // A 340 px tile (524 px input, 16.5 MiB first map) does not fit: the backend fails, the
    // retry predicts with a smaller tile on the same device.
    let (img, truth) = em_slice(340);
    let cancel = CancelToken::new();
    let mut retries = Vec::new();
    let mut tried = Vec::new();
    let gpu_probs = with_smaller_tiles(
        &unet,
        340,
        &mut |from, to| retries.push((from, to)),
        &mut |tile| {
            tried.push(tile);
            predict_probabilities(
                &model_gpu,
                &unet,
                std::slice::from_ref(&img),
                tile,
                &gpu.device,
                &cancel,
                &mut |_, _| {},
            )
        },
    )
    .expect("the smaller tile fits");
    assert_eq!(tried.first(), Some(&340));
    assert!(!retries.is_empty(), "340 px must not fit in 16 MiB buffers");
    assert!(*tried.last().unwrap() <= 324);
    // Overlap-tile prediction does not depend on the tile: the CPU's whole-image answer.
    let cpu_probs = predict_probabilities(
        &model_cpu,
        &unet,
        std::slice::from_ref(&img),
        340,
        &cpu.device,
        &cancel,
        &mut |_, _| {},
    )
    .unwrap();
    let max = gpu_probs[1]
        .data
        .iter()
        .zip(&cpu_probs[1].data)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(max < 1e-3, "GPU after the retry vs CPU: {max}");
    // The same through predict_fitting (app and CLI): it reports the tile that worked.
    let mut told = Vec::new();
    let (used, again) = predict_fitting(
        &model_gpu,
        &unet,
        std::slice::from_ref(&img),
        340,
        &gpu.device,
        &cancel,
        &mut |from, to| told.push((from, to)),
        &mut |_, _| {},
        &[D4::default()],
    )
    .unwrap();
    assert_eq!(Some(&used), tried.last());
    assert_eq!(told, retries);
    assert!(again[1].data == gpu_probs[1].data);

    // Training: one step with a tile that does not fit, then with the smaller one.
    let set = TrainSet {
        images: vec![vec![img]],
        labels: vec![encode_labels(&truth, LabelEncoding::Binary).unwrap()],
        held_out: Vec::new(),
    };
    let cfg = TrainConfig {
        iterations: 1,
        tile_out: 340,
        optimizer: OptimizerConfig::Adam { lr: 1e-3 },
        val_fraction: 0.0,
        val_every: 0,
        checkpoint_every: 0,
        // Only the retry is tested here: no validation on the starting network's own
        // segmentation, no distillation (both predict whole slices on software Vulkan).
        keep_best: false,
        parent_weight: 0.0,
        ..TrainConfig::default()
    };
    let mut retries = Vec::new();
    let out = train_fitting(
        &set,
        &cfg,
        StartFrom::FineTune(Box::new(ckpt.clone())),
        &gpu,
        None,
        &cancel,
        &mut |from, to| retries.push((from, to)),
        &mut |_| {},
    )
    .expect("training with the smaller tile");
    assert!(!retries.is_empty(), "a 340 px training tile must not fit");
    assert_eq!(out.iteration, 1);
    assert!(out.losses[0].is_finite());
}
