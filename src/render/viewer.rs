//! The image viewer's wgpu pipeline, drawn through an egui paint callback. It knows textures
//! and uniforms only, never application state: the app sends the uniforms and any pending
//! uploads (a new slice, changed label rows) with each frame's callback.

use eframe::egui_wgpu::{self, wgpu};

pub use super::tiles::{TileRect, tile_layout};

use super::gpu::{
    array_view, bind_group_of_views, create_texture, create_texture_array, fullscreen_pipeline,
    texture_array_entry, texture_entry, uniform_buffer, uniform_entry, write_texture,
    write_texture_layer,
};

/// `flags` bit: draw the label overlay.
pub const SHOW_LABELS: u32 = 1;
/// `flags` bit: dim pixels without a label.
pub const DIM_UNLABELLED: u32 = 2;
/// `flags` bit: the mask overlay closes gaps along the uploaded lines ([`Upload::GapLines`]).
pub const GAP_LINES: u32 = 4;

/// `overlay`: none.
pub const OVERLAY_NONE: u32 = 0;
/// `overlay`: the uploaded map ([`Upload::Map`], a weight map) in heat colours.
pub const OVERLAY_MAP: u32 = 1;
/// `overlay`: the probability of class `overlay_class + 1` in heat colours.
pub const OVERLAY_PROBABILITY: u32 = 2;
/// `overlay`: every pixel's class by the rule in `threshold` (and the gap-closing lines), in
/// the palette's class colours.
pub const OVERLAY_MASK: u32 = 3;
/// `overlay`: the entropy of the class probabilities over ln K, in heat colours.
pub const OVERLAY_UNCERTAINTY: u32 = 4;

/// Uniforms of `shaders/viewer.wgsl`, mirrored field by field by its `struct View` (192
/// bytes: every field 4-byte aligned, every `[f32; 2]` at a multiple of 8 and every
/// `[f32; 4]` at a multiple of 16, so this `#[repr(C)]` layout is the WGSL one). The app
/// fills the view; the renderer sets the `tile_*` fields and `background` per texture tile.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ViewUniforms {
    /// Callback rect min in framebuffer pixels.
    pub rect_min: [f32; 2],
    /// Framebuffer pixels per image pixel.
    pub zoom: f32,
    /// Gamma of the grey values.
    pub gamma: f32,
    /// Image coordinates shown at `rect_min`.
    pub origin: [f32; 2],
    /// Image width and height.
    pub image_size: [f32; 2],
    /// Channels in the image texture (1 to 4).
    pub channels: u32,
    /// What the overlay shows: [`OVERLAY_NONE`], [`OVERLAY_MAP`], [`OVERLAY_PROBABILITY`],
    /// [`OVERLAY_MASK`], [`OVERLAY_UNCERTAINTY`].
    pub overlay: u32,
    /// Opacity of the label overlay.
    pub label_opacity: f32,
    /// [`SHOW_LABELS`], [`DIM_UNLABELLED`], [`GAP_LINES`].
    pub flags: u32,
    /// Opacity of the overlay.
    pub map_opacity: f32,
    /// Overlay value shown cold.
    pub map_cold: f32,
    /// Overlay value shown hot.
    pub map_hot: f32,
    /// The mask of two classes: class 2 where its probability exceeds this; negative: the
    /// most probable class (the rule of [`crate::postprocess::Decision::classes`]).
    pub threshold: f32,
    /// The image pixels this tile draws: x0, y0, x1, y1 (exclusive).
    pub tile_core: [f32; 4],
    /// Image coordinates of the tile textures' first texel.
    pub tile_origin: [f32; 2],
    /// 1 when this tile draws the background outside the image, else 0.
    pub background: u32,
    /// The class the probability overlay shows, 0-based.
    pub overlay_class: u32,
    /// Per channel, the raw value shown black (contrast window).
    pub channel_min: [f32; 4],
    /// Per channel, the raw value shown at full colour.
    pub channel_max: [f32; 4],
    /// Per channel, its colour (linear 0..1) and whether it is shown (w: 1 or 0); the
    /// composite adds the shown channels' colours.
    pub channel_colour: [[f32; 4]; 4],
}

/// Data to move to the GPU before drawing.
#[derive(Clone, Debug)]
pub enum Upload {
    /// (Re)create the textures for an image of this size, split into tiles of at most
    /// `tile_edge` pixels per side (and at most the device's limit).
    Resize {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// Largest texture edge to use.
        tile_edge: u32,
        /// Channels of the image (1: one `f32` per pixel; 2 to 4: four per pixel).
        channels: u32,
    },
    /// The raw values of the shown slice: `width * height` values for one channel, else four
    /// per pixel (channels interleaved, unused ones zero).
    Image(Vec<f32>),
    /// A rectangle of the shown slice's labels (what a stroke changed).
    LabelRect {
        /// Left column.
        x0: u32,
        /// Top row.
        y0: u32,
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// `width * height` class ids, row after row.
        data: Vec<u8>,
    },
    /// Colours of class ids 0..=255.
    Palette(Box<[[u8; 4]; 256]>),
    /// The map overlay of the shown slice (`width * height`: a weight map).
    Map(Vec<f32>),
    /// The class probabilities of the shown slice: `classes` planes of `width * height`,
    /// class 1 first; the probability, mask and uncertainty overlays are computed from them
    /// by the shader.
    Probabilities {
        /// Planes.
        classes: u32,
        /// The planes, one after the other.
        data: Vec<f32>,
    },
    /// The gap-closing lines of the shown slice's mask (`width * height`, 1 on a line).
    GapLines(Vec<u8>),
    /// [`Upload::Probabilities`] already on the GPU, in a buffer of the same device (burn's,
    /// when it computes on the display's device): copied into the textures by the GPU, no
    /// read-back and no upload.
    GpuProbabilities(crate::ml::resident::GpuPlanes),
}

struct Tile {
    rect: TileRect,
    image: wgpu::Texture,
    labels: wgpu::Texture,
    map: wgpu::Texture,
    /// One layer per class.
    probs: wgpu::Texture,
    lines: wgpu::Texture,
    uniforms: wgpu::Buffer,
    bind_group: wgpu::BindGroup,
}

struct SliceTextures {
    width: u32,
    height: u32,
    channels: u32,
    /// Layers of the probability textures.
    classes: u32,
    tiles: Vec<Tile>,
}

/// GPU objects of the viewer, created once and kept in egui's callback resources.
pub struct ViewerResources {
    pipeline: wgpu::RenderPipeline,
    layout: wgpu::BindGroupLayout,
    palette: wgpu::Texture,
    slice: Option<SliceTextures>,
    max_edge: u32,
}

/// The largest texture edge the device supports (larger images are shown in tiles).
pub fn max_texture_edge(rs: &egui_wgpu::RenderState) -> u32 {
    rs.device.limits().max_texture_dimension_2d
}

const UNIFORM_BYTES: u64 = std::mem::size_of::<ViewUniforms>() as u64;

/// Builds the pipeline and registers it in the renderer's callback resources.
pub fn install(rs: &egui_wgpu::RenderState) {
    let device = &rs.device;
    let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some("viewer"),
        entries: &[
            uniform_entry(0, UNIFORM_BYTES),
            texture_entry(1, wgpu::TextureSampleType::Float { filterable: false }),
            texture_entry(2, wgpu::TextureSampleType::Uint),
            texture_entry(3, wgpu::TextureSampleType::Float { filterable: false }),
            texture_entry(4, wgpu::TextureSampleType::Float { filterable: false }),
            texture_array_entry(5, wgpu::TextureSampleType::Float { filterable: false }),
            texture_entry(6, wgpu::TextureSampleType::Uint),
        ],
    });
    let pipeline = fullscreen_pipeline(
        rs,
        "viewer",
        include_str!("../../shaders/viewer.wgsl"),
        &layout,
    );
    let palette = create_texture(
        device,
        "viewer palette",
        256,
        1,
        wgpu::TextureFormat::Rgba8Unorm,
    );
    rs.renderer
        .write()
        .callback_resources
        .insert(ViewerResources {
            pipeline,
            layout,
            palette,
            slice: None,
            max_edge: max_texture_edge(rs),
        });
}

impl ViewerResources {
    fn resize(
        &mut self,
        device: &wgpu::Device,
        (width, height, channels): (u32, u32, u32),
        tile_edge: u32,
    ) {
        self.slice = None;
        // 0 = the device's limit.
        let edge = match tile_edge {
            0 => self.max_edge,
            e => e.min(self.max_edge),
        }
        .max(3);
        if width == 0 || height == 0 {
            return;
        }
        let tiles = tile_layout(width, height, edge)
            .into_iter()
            .map(|rect| self.tile(device, rect, channels))
            .collect();
        self.slice = Some(SliceTextures {
            width,
            channels,
            height,
            classes: 1,
            tiles,
        });
    }

    /// Gives every tile probability textures of `classes` layers (their values undefined
    /// until written).
    fn set_classes(&mut self, device: &wgpu::Device, classes: u32) {
        let Some(s) = &mut self.slice else { return };
        if s.classes == classes.max(1) {
            return;
        }
        s.classes = classes.max(1);
        for t in &mut s.tiles {
            t.probs = probs_texture(device, t.rect, s.classes);
            t.bind_group = tile_bind_group(
                device,
                (&self.layout, &t.uniforms, &self.palette),
                [&t.image, &t.labels, &t.map, &t.probs, &t.lines],
            );
        }
    }

    /// [`Upload::Probabilities`]; returns the bytes written.
    fn upload_probabilities(
        &mut self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        classes: u32,
        data: &[f32],
    ) -> u64 {
        let pixels = self
            .slice
            .as_ref()
            .map_or(0, |s| (s.width * s.height) as usize);
        if pixels == 0 || classes == 0 || data.len() != classes as usize * pixels {
            return 0;
        }
        self.set_classes(device, classes);
        let Some(s) = &self.slice else { return 0 };
        let whole = [0, 0, s.width, s.height];
        data.chunks_exact(pixels)
            .enumerate()
            .map(|(k, plane)| {
                s.tiles
                    .iter()
                    .map(|t| write_region_layer(queue, &t.probs, t.rect, whole, k as u32, plane))
                    .sum::<u64>()
            })
            .sum()
    }

    /// [`Upload::GpuProbabilities`]: every tile's window of every class plane copied on the
    /// GPU; returns the bytes copied.
    fn copy_probabilities(
        &mut self,
        device: &wgpu::Device,
        encoder: &mut wgpu::CommandEncoder,
        planes: &crate::ml::resident::GpuPlanes,
    ) -> u64 {
        let fits = self.slice.as_ref().is_some_and(|s| {
            (s.width, s.height) == (planes.width, planes.height) && planes.classes > 0
        });
        if !fits {
            return 0;
        }
        self.set_classes(device, planes.classes);
        self.slice.as_ref().map_or(0, |s| {
            s.tiles
                .iter()
                .map(|t| copy_planes(encoder, planes, t))
                .sum()
        })
    }

    fn tile(&self, device: &wgpu::Device, rect: TileRect, channels: u32) -> Tile {
        let [x0, y0, x1, y1] = rect.tex;
        let tex = |label: &str, format| create_texture(device, label, x1 - x0, y1 - y0, format);
        // A grey image takes a quarter of the memory of a composite's four channels.
        let image = tex(
            "viewer image",
            if channels > 1 {
                wgpu::TextureFormat::Rgba32Float
            } else {
                wgpu::TextureFormat::R32Float
            },
        );
        let labels = tex("viewer labels", wgpu::TextureFormat::R8Uint);
        let map = tex("viewer map", wgpu::TextureFormat::R32Float);
        let lines = tex("viewer gap lines", wgpu::TextureFormat::R8Uint);
        let probs = probs_texture(device, rect, 1);
        let uniforms = uniform_buffer(device, "viewer uniforms", UNIFORM_BYTES);
        let bind_group = tile_bind_group(
            device,
            (&self.layout, &uniforms, &self.palette),
            [&image, &labels, &map, &probs, &lines],
        );
        Tile {
            rect,
            image,
            labels,
            map,
            probs,
            lines,
            uniforms,
            bind_group,
        }
    }

    /// Performs one upload; returns the bytes written to textures from the CPU (copies on the
    /// GPU are encoded into `encoder` and counted in `copied`).
    fn upload(
        &mut self,
        (device, queue, encoder): (&wgpu::Device, &wgpu::Queue, &mut wgpu::CommandEncoder),
        up: &Upload,
        copied: &mut u64,
    ) -> u64 {
        match up {
            Upload::GpuProbabilities(planes) => {
                *copied += self.copy_probabilities(device, encoder, planes);
                0
            }
            Upload::Resize {
                width,
                height,
                tile_edge,
                channels,
            } => {
                self.resize(device, (*width, *height, *channels), *tile_edge);
                0
            }
            Upload::Image(values) => {
                let Some(s) = &self.slice else { return 0 };
                let pixels = (s.width * s.height) as usize;
                let whole = [0, 0, s.width, s.height];
                if s.channels > 1 && values.len() == 4 * pixels {
                    let texels: &[[f32; 4]] = bytemuck::cast_slice(values);
                    s.tiles
                        .iter()
                        .map(|t| write_region(queue, &t.image, t.rect, whole, texels))
                        .sum()
                } else if s.channels == 1 && values.len() == pixels {
                    s.tiles
                        .iter()
                        .map(|t| write_region(queue, &t.image, t.rect, whole, values))
                        .sum()
                } else {
                    0
                }
            }
            Upload::Map(values) => {
                let Some(s) = &self.slice else { return 0 };
                if values.len() != (s.width * s.height) as usize {
                    return 0;
                }
                s.tiles
                    .iter()
                    .map(|t| write_region(queue, &t.map, t.rect, [0, 0, s.width, s.height], values))
                    .sum()
            }
            Upload::Probabilities { classes, data } => {
                self.upload_probabilities(device, queue, *classes, data)
            }
            Upload::GapLines(values) => {
                let Some(s) = &self.slice else { return 0 };
                if values.len() != (s.width * s.height) as usize {
                    return 0;
                }
                s.tiles
                    .iter()
                    .map(|t| {
                        write_region(queue, &t.lines, t.rect, [0, 0, s.width, s.height], values)
                    })
                    .sum()
            }
            Upload::LabelRect {
                x0,
                y0,
                width,
                height,
                data,
            } => {
                let Some(s) = &self.slice else { return 0 };
                let region = [*x0, *y0, x0 + width, y0 + height];
                if region[2] > s.width
                    || region[3] > s.height
                    || data.len() != (width * height) as usize
                {
                    return 0;
                }
                s.tiles
                    .iter()
                    .map(|t| write_region(queue, &t.labels, t.rect, region, data))
                    .sum()
            }
            Upload::Palette(colours) => {
                let bytes: &[u8] = bytemuck::cast_slice(&colours[..]);
                write_texture(queue, &self.palette, [0, 0, 256, 1], bytes, 4);
                bytes.len() as u64
            }
        }
    }
}

/// Copies a tile's texels of every class plane from the GPU buffer into its probability
/// texture, on the GPU; returns the bytes copied. The buffer's rows are 256-byte aligned
/// ([`crate::ml::resident::ROW_ALIGN`]), as wgpu's buffer-to-texture copies require.
fn copy_planes(
    encoder: &mut wgpu::CommandEncoder,
    planes: &crate::ml::resident::GpuPlanes,
    t: &Tile,
) -> u64 {
    let [x0, y0, x1, y1] = t.rect.tex;
    let pitch = u64::from(planes.pitch);
    let plane_bytes = 4 * pitch * u64::from(planes.height);
    for k in 0..planes.classes {
        encoder.copy_buffer_to_texture(
            wgpu::TexelCopyBufferInfo {
                buffer: &planes.buffer,
                layout: wgpu::TexelCopyBufferLayout {
                    offset: planes.offset
                        + u64::from(k) * plane_bytes
                        + 4 * (u64::from(y0) * pitch + u64::from(x0)),
                    bytes_per_row: Some(4 * planes.pitch),
                    rows_per_image: None,
                },
            },
            wgpu::TexelCopyTextureInfo {
                texture: &t.probs,
                mip_level: 0,
                origin: wgpu::Origin3d { x: 0, y: 0, z: k },
                aspect: wgpu::TextureAspect::All,
            },
            wgpu::Extent3d {
                width: x1 - x0,
                height: y1 - y0,
                depth_or_array_layers: 1,
            },
        );
    }
    4 * u64::from((x1 - x0) * (y1 - y0) * planes.classes)
}

/// The probability texture of a tile: `classes` layers of its texels.
fn probs_texture(device: &wgpu::Device, rect: TileRect, classes: u32) -> wgpu::Texture {
    let [x0, y0, x1, y1] = rect.tex;
    create_texture_array(
        device,
        "viewer probabilities",
        (x1 - x0, y1 - y0, classes),
        wgpu::TextureFormat::R32Float,
    )
}

/// The bind group of a tile's uniforms and its image, labels, map, probabilities and lines
/// textures, with the shared palette (the bindings of `shaders/viewer.wgsl`).
fn tile_bind_group(
    device: &wgpu::Device,
    (layout, uniforms, palette): (&wgpu::BindGroupLayout, &wgpu::Buffer, &wgpu::Texture),
    [image, labels, map, probs, lines]: [&wgpu::Texture; 5],
) -> wgpu::BindGroup {
    let view = |tex: &wgpu::Texture| tex.create_view(&wgpu::TextureViewDescriptor::default());
    bind_group_of_views(
        device,
        "viewer",
        layout,
        uniforms,
        &[
            view(image),
            view(labels),
            view(palette),
            view(map),
            array_view(probs),
            view(lines),
        ],
    )
}

/// Writes the image region `[x0, y0, x1, y1)` (`data`, row after row) into the part of tile
/// `rect` it covers; returns the bytes written. Only a tile narrower than the region needs a
/// copy of its columns.
fn write_region<T: bytemuck::Pod>(
    queue: &wgpu::Queue,
    tex: &wgpu::Texture,
    rect: TileRect,
    region: [u32; 4],
    data: &[T],
) -> u64 {
    write_region_layer(queue, tex, rect, region, 0, data)
}

/// [`write_region`] into array layer `layer`.
fn write_region_layer<T: bytemuck::Pod>(
    queue: &wgpu::Queue,
    tex: &wgpu::Texture,
    rect: TileRect,
    [x0, y0, x1, y1]: [u32; 4],
    layer: u32,
    data: &[T],
) -> u64 {
    let [tx0, ty0, tx1, ty1] = rect.tex;
    let (a0, a1) = (x0.max(tx0), x1.min(tx1));
    let (b0, b1) = (y0.max(ty0), y1.min(ty1));
    if a0 >= a1 || b0 >= b1 {
        return 0;
    }
    let bpp = std::mem::size_of::<T>() as u32;
    let target = [a0 - tx0, b0 - ty0, a1 - a0, b1 - b0];
    let w = (x1 - x0) as usize;
    let rows = &data[(b0 - y0) as usize * w..(b1 - y0) as usize * w];
    if a0 == x0 && a1 == x1 {
        write_texture_layer(queue, tex, target, layer, bytemuck::cast_slice(rows), bpp);
    } else {
        let (c0, c1) = ((a0 - x0) as usize, (a1 - x0) as usize);
        let part: Vec<T> = rows
            .chunks_exact(w)
            .flat_map(|row| &row[c0..c1])
            .copied()
            .collect();
        write_texture_layer(queue, tex, target, layer, bytemuck::cast_slice(&part), bpp);
    }
    u64::from(target[2] * target[3] * bpp)
}

/// Uploads waiting for the next frame that is actually rendered, and what the renderer
/// reports back. Shared between the app and its callbacks: a pass that egui discards, or a
/// frame that is never painted (headless tests), leaves uploads queued instead of losing them.
#[derive(Debug, Default)]
pub struct GpuFeed {
    /// Uploads not yet performed.
    pub pending: Vec<Upload>,
    /// Texture tiles of the current slice.
    pub tiles: usize,
    /// Bytes written to textures from the CPU so far.
    pub uploaded_bytes: u64,
    /// Bytes copied into textures from GPU buffers so far.
    pub gpu_copied_bytes: u64,
}

/// The shared [`GpuFeed`].
pub type UploadQueue = std::sync::Arc<std::sync::Mutex<GpuFeed>>;

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
        encoder: &mut wgpu::CommandEncoder,
        resources: &mut egui_wgpu::CallbackResources,
    ) -> Vec<wgpu::CommandBuffer> {
        if let Some(r) = resources.get_mut::<ViewerResources>() {
            let mut feed = self
                .uploads
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut copied = 0;
            for up in std::mem::take(&mut feed.pending) {
                feed.uploaded_bytes += r.upload((device, queue, encoder), &up, &mut copied);
            }
            feed.gpu_copied_bytes += copied;
            feed.tiles = r.slice.as_ref().map_or(0, |s| s.tiles.len());
            drop(feed);
            if let Some(s) = &r.slice {
                for (i, t) in s.tiles.iter().enumerate() {
                    let [cx0, cy0, cx1, cy1] = t.rect.core;
                    let mut u = self.uniforms;
                    u.tile_core = [cx0 as f32, cy0 as f32, cx1 as f32, cy1 as f32];
                    u.tile_origin = [t.rect.tex[0] as f32, t.rect.tex[1] as f32];
                    u.background = u32::from(i == 0);
                    queue.write_buffer(&t.uniforms, 0, bytemuck::bytes_of(&u));
                }
            }
        }
        Vec::new()
    }

    fn paint(
        &self,
        info: eframe::egui::PaintCallbackInfo,
        render_pass: &mut wgpu::RenderPass<'static>,
        resources: &egui_wgpu::CallbackResources,
    ) {
        if let Some(r) = resources.get::<ViewerResources>()
            && let Some(s) = &r.slice
        {
            render_pass.set_pipeline(&r.pipeline);
            let clip = info.clip_rect_in_pixels();
            let clip = [
                clip.left_px.max(0),
                clip.top_px.max(0),
                (clip.left_px + clip.width_px).min(info.screen_size_px[0] as i32),
                (clip.top_px + clip.height_px).min(info.screen_size_px[1] as i32),
            ];
            let u = &self.uniforms;
            for (i, t) in s.tiles.iter().enumerate() {
                // The first tile also draws the background, over the whole clip rectangle;
                // the others only where their core lands on screen (one pixel of slack, the
                // shader discards the rest).
                let [x0, y0, x1, y1] = if i == 0 {
                    clip
                } else {
                    let to_px = |v: u32, axis: usize| {
                        u.rect_min[axis] + (v as f32 - u.origin[axis]) * u.zoom
                    };
                    let [cx0, cy0, cx1, cy1] = t.rect.core;
                    [
                        (to_px(cx0, 0).floor() as i32 - 1).max(clip[0]),
                        (to_px(cy0, 1).floor() as i32 - 1).max(clip[1]),
                        (to_px(cx1, 0).ceil() as i32 + 1).min(clip[2]),
                        (to_px(cy1, 1).ceil() as i32 + 1).min(clip[3]),
                    ]
                };
                if x1 <= x0 || y1 <= y0 {
                    continue;
                }
                render_pass.set_scissor_rect(
                    x0 as u32,
                    y0 as u32,
                    (x1 - x0) as u32,
                    (y1 - y0) as u32,
                );
                render_pass.set_bind_group(0, &t.bind_group, &[]);
                render_pass.draw(0..3, 0..1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The WGSL `struct View` has the fields of [`ViewUniforms`], in order, at the same
    /// offsets, and the same size (naga lays the shader's struct out).
    #[test]
    fn the_shader_mirrors_the_uniform_struct() {
        use std::mem::offset_of;
        let rust = [
            ("rect_min", offset_of!(ViewUniforms, rect_min)),
            ("zoom", offset_of!(ViewUniforms, zoom)),
            ("gamma", offset_of!(ViewUniforms, gamma)),
            ("origin", offset_of!(ViewUniforms, origin)),
            ("image_size", offset_of!(ViewUniforms, image_size)),
            ("channels", offset_of!(ViewUniforms, channels)),
            ("overlay", offset_of!(ViewUniforms, overlay)),
            ("label_opacity", offset_of!(ViewUniforms, label_opacity)),
            ("flags", offset_of!(ViewUniforms, flags)),
            ("map_opacity", offset_of!(ViewUniforms, map_opacity)),
            ("map_cold", offset_of!(ViewUniforms, map_cold)),
            ("map_hot", offset_of!(ViewUniforms, map_hot)),
            ("threshold", offset_of!(ViewUniforms, threshold)),
            ("tile_core", offset_of!(ViewUniforms, tile_core)),
            ("tile_origin", offset_of!(ViewUniforms, tile_origin)),
            ("background", offset_of!(ViewUniforms, background)),
            ("overlay_class", offset_of!(ViewUniforms, overlay_class)),
            ("channel_min", offset_of!(ViewUniforms, channel_min)),
            ("channel_max", offset_of!(ViewUniforms, channel_max)),
            ("channel_colour", offset_of!(ViewUniforms, channel_colour)),
        ];
        let module = wgpu::naga::front::wgsl::parse_str(include_str!("../../shaders/viewer.wgsl"))
            .expect("viewer.wgsl parses");
        let (members, span) = module
            .types
            .iter()
            .find_map(|(_, ty)| match (&ty.name, &ty.inner) {
                (Some(name), wgpu::naga::TypeInner::Struct { members, span }) if name == "View" => {
                    Some((members.clone(), *span))
                }
                _ => None,
            })
            .expect("struct View in viewer.wgsl");
        let wgsl: Vec<(String, usize)> = members
            .iter()
            .map(|m| (m.name.clone().unwrap_or_default(), m.offset as usize))
            .collect();
        let rust: Vec<(String, usize)> = rust.iter().map(|(n, o)| (n.to_string(), *o)).collect();
        assert_eq!(wgsl, rust);
        assert_eq!(span as usize, std::mem::size_of::<ViewUniforms>());
        assert_eq!(UNIFORM_BYTES, 192);
    }
}
