//! The augmentation view's pipeline (`shaders/deform.wgsl`): the deformed image, windowed on
//! the GPU, with the deformation drawn as a warped grid from the dense displacement field.

use std::sync::{Arc, Mutex, PoisonError};

use eframe::egui_wgpu::{self, wgpu};

use super::gpu::{
    bind_group, create_texture, fullscreen_pipeline, texture_entry, uniform_buffer, uniform_entry,
    write_texture,
};

/// Uniforms of `shaders/deform.wgsl` (three `vec4<f32>`, 48 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct DeformUniforms {
    /// Callback rect min in framebuffer pixels, framebuffer pixels per image pixel, gamma.
    pub a: [f32; 4],
    /// Window min, window max, grid spacing in source pixels, half line width in
    /// framebuffer pixels.
    pub b: [f32; 4],
    /// Image width, image height, grid opacity, unused.
    pub c: [f32; 4],
}

const UNIFORM_BYTES: u64 = std::mem::size_of::<DeformUniforms>() as u64;

/// A deformation sample to show: the deformed raw image and the displacement of every pixel
/// (pixel `p` was sampled from `p + (dx, dy)`).
#[derive(Clone, Debug)]
pub struct DeformUpload {
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// `width * height` raw values.
    pub image: Vec<f32>,
    /// `width * height` displacements `[dx, dy]`.
    pub field: Vec<[f32; 2]>,
}

/// The sample waiting for the next rendered frame (shared by the app and its callbacks).
pub type DeformQueue = Arc<Mutex<Option<DeformUpload>>>;

struct Sample {
    width: u32,
    height: u32,
    bind_group: wgpu::BindGroup,
    _textures: [wgpu::Texture; 2],
}

struct DeformResources {
    pipeline: wgpu::RenderPipeline,
    layout: wgpu::BindGroupLayout,
    uniforms: wgpu::Buffer,
    sample: Option<Sample>,
}

/// Builds the pipeline and registers it in the renderer's callback resources.
pub fn install(rs: &egui_wgpu::RenderState) {
    let device = &rs.device;
    let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some("deform"),
        entries: &[
            uniform_entry(0, UNIFORM_BYTES),
            texture_entry(1, wgpu::TextureSampleType::Float { filterable: false }),
            texture_entry(2, wgpu::TextureSampleType::Float { filterable: false }),
        ],
    });
    let pipeline = fullscreen_pipeline(
        rs,
        "deform",
        include_str!("../../shaders/deform.wgsl"),
        &layout,
    );
    let uniforms = uniform_buffer(device, "deform uniforms", UNIFORM_BYTES);
    rs.renderer
        .write()
        .callback_resources
        .insert(DeformResources {
            pipeline,
            layout,
            uniforms,
            sample: None,
        });
}

impl DeformResources {
    fn upload(&mut self, device: &wgpu::Device, queue: &wgpu::Queue, up: &DeformUpload) {
        let n = (up.width * up.height) as usize;
        if n == 0 || up.image.len() != n || up.field.len() != n {
            self.sample = None;
            return;
        }
        let image = create_texture(
            device,
            "deformed image",
            up.width,
            up.height,
            wgpu::TextureFormat::R32Float,
        );
        let field = create_texture(
            device,
            "deformation field",
            up.width,
            up.height,
            wgpu::TextureFormat::Rg32Float,
        );
        let rect = [0, 0, up.width, up.height];
        write_texture(queue, &image, rect, bytemuck::cast_slice(&up.image), 4);
        write_texture(queue, &field, rect, bytemuck::cast_slice(&up.field), 8);
        let bind_group = bind_group(
            device,
            "deform",
            &self.layout,
            &self.uniforms,
            &[&image, &field],
        );
        self.sample = Some(Sample {
            width: up.width,
            height: up.height,
            bind_group,
            _textures: [image, field],
        });
    }
}

/// One frame's drawing of the augmentation view.
pub struct DeformCallback {
    /// Uniforms of this frame.
    pub uniforms: DeformUniforms,
    /// A new sample to upload first, if any.
    pub upload: DeformQueue,
}

impl egui_wgpu::CallbackTrait for DeformCallback {
    fn prepare(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        _screen: &egui_wgpu::ScreenDescriptor,
        _encoder: &mut wgpu::CommandEncoder,
        resources: &mut egui_wgpu::CallbackResources,
    ) -> Vec<wgpu::CommandBuffer> {
        if let Some(r) = resources.get_mut::<DeformResources>() {
            let pending = self
                .upload
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(up) = pending {
                r.upload(device, queue, &up);
            }
            queue.write_buffer(&r.uniforms, 0, bytemuck::bytes_of(&self.uniforms));
        }
        Vec::new()
    }

    fn paint(
        &self,
        _info: eframe::egui::PaintCallbackInfo,
        render_pass: &mut wgpu::RenderPass<'static>,
        resources: &egui_wgpu::CallbackResources,
    ) {
        if let Some(r) = resources.get::<DeformResources>()
            && let Some(s) = &r.sample
            && s.width == self.uniforms.c[0] as u32
            && s.height == self.uniforms.c[1] as u32
        {
            render_pass.set_pipeline(&r.pipeline);
            render_pass.set_bind_group(0, &s.bind_group, &[]);
            render_pass.draw(0..3, 0..1);
        }
    }
}
