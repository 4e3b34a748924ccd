//! The image viewer's wgpu pipeline, drawn through an egui paint callback. It knows textures
//! and uniforms only, never application state: the app sends the uniforms and any pending
//! uploads (a new slice, changed label rows) with each frame's callback.

use eframe::egui_wgpu::{self, wgpu};

/// Uniforms of `shaders/viewer.wgsl` (four `vec4<f32>`, 64 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ViewUniforms {
    /// Callback rect min in framebuffer pixels, zoom (framebuffer px per image px), gamma.
    pub a: [f32; 4],
    /// Image coordinates at the rect min, image width, image height.
    pub b: [f32; 4],
    /// Window min, window max, label opacity, flags (1 = show labels, 2 = dim unlabelled,
    /// 4 = map overlay).
    pub c: [f32; 4],
    /// Map opacity, map value shown cold, map value shown hot, unused.
    pub d: [f32; 4],
}

/// Data to move to the GPU before drawing.
#[derive(Clone, Debug)]
pub enum Upload {
    /// (Re)create the textures for an image of this size.
    Resize {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
    },
    /// The raw values of the shown slice (`width * height`).
    Image(Vec<f32>),
    /// Label rows `y0 .. y0 + rows` of the shown slice.
    LabelRows {
        /// First row.
        y0: u32,
        /// Row count.
        rows: u32,
        /// `rows * width` class ids.
        data: Vec<u8>,
    },
    /// Colours of class ids 0..=255.
    Palette(Box<[[u8; 4]; 256]>),
    /// The overlay map of the shown slice (`width * height`: a probability, an entropy).
    Map(Vec<f32>),
}

struct SliceTextures {
    width: u32,
    height: u32,
    image: wgpu::Texture,
    labels: wgpu::Texture,
    map: wgpu::Texture,
    bind_group: wgpu::BindGroup,
}

/// GPU objects of the viewer, created once and kept in egui's callback resources.
pub struct ViewerResources {
    pipeline: wgpu::RenderPipeline,
    layout: wgpu::BindGroupLayout,
    uniforms: wgpu::Buffer,
    palette: wgpu::Texture,
    slice: Option<SliceTextures>,
    max_edge: u32,
}

/// The largest texture edge the device supports (images above it cannot be shown yet).
pub fn max_texture_edge(rs: &egui_wgpu::RenderState) -> u32 {
    rs.device.limits().max_texture_dimension_2d
}

/// Builds the pipeline and registers it in the renderer's callback resources.
pub fn install(rs: &egui_wgpu::RenderState) {
    let device = &rs.device;
    let shader = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("viewer"),
        source: wgpu::ShaderSource::Wgsl(include_str!("../../shaders/viewer.wgsl").into()),
    });
    let tex_entry =
        |binding: u32, sample_type: wgpu::TextureSampleType| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::FRAGMENT,
            ty: wgpu::BindingType::Texture {
                sample_type,
                view_dimension: wgpu::TextureViewDimension::D2,
                multisampled: false,
            },
            count: None,
        };
    let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some("viewer"),
        entries: &[
            wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::FRAGMENT,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: false,
                    min_binding_size: std::num::NonZeroU64::new(64),
                },
                count: None,
            },
            tex_entry(1, wgpu::TextureSampleType::Float { filterable: false }),
            tex_entry(2, wgpu::TextureSampleType::Uint),
            tex_entry(3, wgpu::TextureSampleType::Float { filterable: false }),
            tex_entry(4, wgpu::TextureSampleType::Float { filterable: false }),
        ],
    });
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some("viewer"),
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
        label: Some("viewer"),
        layout: Some(&pipeline_layout),
        vertex: wgpu::VertexState {
            module: &shader,
            entry_point: Some("vs_main"),
            buffers: &[],
            compilation_options: wgpu::PipelineCompilationOptions::default(),
        },
        fragment: Some(wgpu::FragmentState {
            module: &shader,
            entry_point: Some("fs_main"),
            targets: &[Some(rs.target_format.into())],
            compilation_options: wgpu::PipelineCompilationOptions::default(),
        }),
        primitive: wgpu::PrimitiveState::default(),
        depth_stencil: None,
        multisample: wgpu::MultisampleState::default(),
        multiview_mask: None,
        cache: None,
    });
    let uniforms = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("viewer uniforms"),
        size: 64,
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let palette = device.create_texture(&wgpu::TextureDescriptor {
        label: Some("viewer palette"),
        size: wgpu::Extent3d {
            width: 256,
            height: 1,
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba8Unorm,
        usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    });
    rs.renderer
        .write()
        .callback_resources
        .insert(ViewerResources {
            pipeline,
            layout,
            uniforms,
            palette,
            slice: None,
            max_edge: max_texture_edge(rs),
        });
}

impl ViewerResources {
    fn resize(&mut self, device: &wgpu::Device, width: u32, height: u32) {
        if width == 0 || height == 0 || width > self.max_edge || height > self.max_edge {
            self.slice = None;
            return;
        }
        let tex = |label: &str, format: wgpu::TextureFormat| {
            device.create_texture(&wgpu::TextureDescriptor {
                label: Some(label),
                size: wgpu::Extent3d {
                    width,
                    height,
                    depth_or_array_layers: 1,
                },
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format,
                usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
                view_formats: &[],
            })
        };
        let image = tex("viewer image", wgpu::TextureFormat::R32Float);
        let labels = tex("viewer labels", wgpu::TextureFormat::R8Uint);
        let map = tex("viewer map", wgpu::TextureFormat::R32Float);
        let view = |t: &wgpu::Texture| t.create_view(&wgpu::TextureViewDescriptor::default());
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("viewer"),
            layout: &self.layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: self.uniforms.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: wgpu::BindingResource::TextureView(&view(&image)),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: wgpu::BindingResource::TextureView(&view(&labels)),
                },
                wgpu::BindGroupEntry {
                    binding: 3,
                    resource: wgpu::BindingResource::TextureView(&view(&self.palette)),
                },
                wgpu::BindGroupEntry {
                    binding: 4,
                    resource: wgpu::BindingResource::TextureView(&view(&map)),
                },
            ],
        });
        self.slice = Some(SliceTextures {
            width,
            height,
            image,
            labels,
            map,
            bind_group,
        });
    }

    fn upload(&mut self, device: &wgpu::Device, queue: &wgpu::Queue, up: &Upload) {
        let write =
            |tex: &wgpu::Texture, y0: u32, w: u32, rows: u32, bytes_per_px: u32, data: &[u8]| {
                queue.write_texture(
                    wgpu::TexelCopyTextureInfo {
                        texture: tex,
                        mip_level: 0,
                        origin: wgpu::Origin3d { x: 0, y: y0, z: 0 },
                        aspect: wgpu::TextureAspect::All,
                    },
                    data,
                    wgpu::TexelCopyBufferLayout {
                        offset: 0,
                        bytes_per_row: Some(w * bytes_per_px),
                        rows_per_image: Some(rows),
                    },
                    wgpu::Extent3d {
                        width: w,
                        height: rows,
                        depth_or_array_layers: 1,
                    },
                );
            };
        match up {
            Upload::Resize { width, height } => self.resize(device, *width, *height),
            Upload::Image(values) => {
                if let Some(s) = &self.slice
                    && values.len() == (s.width * s.height) as usize
                {
                    write(
                        &s.image,
                        0,
                        s.width,
                        s.height,
                        4,
                        bytemuck::cast_slice(values),
                    );
                }
            }
            Upload::LabelRows { y0, rows, data } => {
                if let Some(s) = &self.slice
                    && y0 + rows <= s.height
                    && data.len() == (rows * s.width) as usize
                {
                    write(&s.labels, *y0, s.width, *rows, 1, data);
                }
            }
            Upload::Map(values) => {
                if let Some(s) = &self.slice
                    && values.len() == (s.width * s.height) as usize
                {
                    write(
                        &s.map,
                        0,
                        s.width,
                        s.height,
                        4,
                        bytemuck::cast_slice(values),
                    );
                }
            }
            Upload::Palette(colours) => {
                write(
                    &self.palette,
                    0,
                    256,
                    1,
                    4,
                    bytemuck::cast_slice(&colours[..]),
                );
            }
        }
    }
}

/// Uploads waiting for the next frame that is actually rendered. Shared between the app and
/// its callbacks: a pass that egui discards, or a frame that is never painted (headless tests),
/// leaves them queued instead of losing them.
pub type UploadQueue = std::sync::Arc<std::sync::Mutex<Vec<Upload>>>;

/// One frame's drawing of the viewer: small uniforms plus the shared upload queue.
pub struct ViewerCallback {
    /// Uniforms of this frame.
    pub uniforms: ViewUniforms,
    /// Uploads to perform before drawing (drained by `prepare`).
    pub uploads: UploadQueue,
}

impl egui_wgpu::CallbackTrait for ViewerCallback {
    fn prepare(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        _screen: &egui_wgpu::ScreenDescriptor,
        _encoder: &mut wgpu::CommandEncoder,
        resources: &mut egui_wgpu::CallbackResources,
    ) -> Vec<wgpu::CommandBuffer> {
        if let Some(r) = resources.get_mut::<ViewerResources>() {
            let pending = std::mem::take(
                &mut *self
                    .uploads
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
            for up in &pending {
                r.upload(device, queue, up);
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
        if let Some(r) = resources.get::<ViewerResources>()
            && let Some(s) = &r.slice
        {
            render_pass.set_pipeline(&r.pipeline);
            render_pass.set_bind_group(0, &s.bind_group, &[]);
            render_pass.draw(0..3, 0..1);
        }
    }
}
