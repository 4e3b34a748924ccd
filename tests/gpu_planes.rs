//! Probabilities kept on the GPU (`ml::resident::GpuPlanes`): the buffer burn hands out holds
//! each class plane row by row at the stated pitch and offset, rows padded to wgpu's 256-byte
//! alignment. Read back here through wgpu itself, on the machine's adapter (lavapipe in CI).
//! One test per process: burn's wgpu runtime is set up once.

use burn::prelude::{Device, Tensor};
use burn::tensor::wgpu::wgpu;
use unet_studio::ml::resident::{GpuPlanes, ROW_ALIGN};

#[test]
fn the_gpu_buffer_holds_the_planes_row_by_row_at_the_pitch() {
    let (device, setup) = match Device::wgpu_options().init_with_setup() {
        Ok(v) => v,
        Err(e) => panic!("no wgpu adapter (lavapipe is enough): {e}"),
    };
    // Width 70: not a multiple of 64 floats, so the rows are padded to 128.
    let (k, h, w) = (2usize, 5usize, 70usize);
    let value = |c: usize, y: usize, x: usize| (c * 10_000 + y * 100 + x) as f32;
    let data: Vec<f32> = (0..k * h * w)
        .map(|i| value(i / (h * w), i / w % h, i % w))
        .collect();
    let t = Tensor::<1>::from_floats(data.as_slice(), &device).reshape([k, h, w]);
    let planes = GpuPlanes::of(t)
        .unwrap()
        .expect("a wgpu tensor has a buffer");
    assert_eq!((planes.classes, planes.height, planes.width), (2, 5, 70));
    assert_eq!(planes.pitch as usize, 2 * ROW_ALIGN);
    assert_eq!(planes.offset % 4, 0);

    let bytes = 4 * u64::from(planes.pitch) * (k * h) as u64;
    let read = setup.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("read back"),
        size: bytes,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = setup
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
    encoder.copy_buffer_to_buffer(&planes.buffer, planes.offset, &read, 0, bytes);
    setup.queue.submit([encoder.finish()]);
    read.slice(..)
        .map_async(wgpu::MapMode::Read, |r| r.unwrap());
    setup
        .device
        .poll(wgpu::PollType::Wait {
            submission_index: None,
            timeout: None,
        })
        .unwrap();
    let mapped = read.slice(..).get_mapped_range().unwrap();
    let got: Vec<f32> = bytemuck::cast_slice::<u8, f32>(&mapped[..]).to_vec();
    let pitch = planes.pitch as usize;
    for c in 0..k {
        for y in 0..h {
            for x in 0..pitch {
                let v = got[(c * h + y) * pitch + x];
                let want = if x < w { value(c, y, x) } else { 0.0 };
                assert_eq!(v, want, "class {c}, row {y}, column {x}");
            }
        }
    }
}
