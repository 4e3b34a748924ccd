// Image viewer: per-channel contrast windows + gamma on the raw values, the shown channels
// added in their colours (Fiji's composite; one white channel for grey images), label overlay
// through a palette.
// Drawn as one full-viewport triangle per texture tile inside egui's paint-callback viewport;
// each tile draws the image pixels of its core rectangle and discards the others. A tile's
// textures hold its core plus a one-pixel halo, so bilinear taps across a border are exact.

// Mirrors `ViewUniforms` of src/render/viewer.rs field by field (192 bytes; every vec2 at a
// multiple of 8, every vec4 at a multiple of 16): change both together.
struct View {
    rect_min: vec2<f32>,     // callback rect min in framebuffer pixels
    zoom: f32,               // framebuffer px per image px
    gamma: f32,
    origin: vec2<f32>,       // image coordinates shown at rect_min
    image_size: vec2<f32>,   // image width, height
    channels: u32,           // channels in image_tex (1 to 4)
    _pad2: u32,
    label_opacity: f32,
    flags: u32,              // 1 = show labels, 2 = dim unlabelled, 4 = show the map overlay,
                             // 8 = the map holds class ids (drawn in the palette's colours)
    map_opacity: f32,
    map_cold: f32,           // map value shown cold
    map_hot: f32,            // map value shown hot
    _pad0: f32,
    tile_core: vec4<f32>,    // the image pixels this tile draws: x0, y0, x1, y1 (exclusive)
    tile_origin: vec2<f32>,  // image coordinates of the tile textures' first texel
    background: u32,         // 1 = this tile draws the background outside the image
    _pad1: u32,
    channel_min: vec4<f32>,  // per channel: raw value shown black
    channel_max: vec4<f32>,  // per channel: raw value shown at full colour
    channel_colour: array<vec4<f32>, 4>, // per channel: rgb, and w = 1 when shown
};

@group(0) @binding(0) var<uniform> view: View;
@group(0) @binding(1) var image_tex: texture_2d<f32>;
@group(0) @binding(2) var label_tex: texture_2d<u32>;
@group(0) @binding(3) var palette_tex: texture_2d<f32>;
@group(0) @binding(4) var map_tex: texture_2d<f32>;

// Heat colour map (black, red, yellow, white) of t in 0..1.
fn heat(t: f32) -> vec3<f32> {
    let x = clamp(t, 0.0, 1.0);
    return vec3<f32>(clamp(3.0 * x, 0.0, 1.0), clamp(3.0 * x - 1.0, 0.0, 1.0), clamp(3.0 * x - 2.0, 0.0, 1.0));
}

@vertex
fn vs_main(@builtin(vertex_index) i: u32) -> @builtin(position) vec4<f32> {
    let x = f32((i << 1u) & 2u) * 2.0 - 1.0;
    let y = f32(i & 2u) * 2.0 - 1.0;
    return vec4<f32>(x, y, 0.0, 1.0);
}

// Raw values (one per channel) at image pixel p (clamped to the tile's texels: the image
// border, or the halo).
fn raw_at(p: vec2<i32>) -> vec4<f32> {
    let size = vec2<i32>(textureDimensions(image_tex));
    let local = p - vec2<i32>(view.tile_origin);
    return textureLoad(image_tex, clamp(local, vec2<i32>(0, 0), size - vec2<i32>(1, 1)), 0);
}

// The shown channels, each windowed, gamma-corrected and in its colour, added.
fn composite(raw: vec4<f32>) -> vec3<f32> {
    let span = max(view.channel_max - view.channel_min, vec4<f32>(1e-20));
    let t = pow(clamp((raw - view.channel_min) / span, vec4<f32>(0.0), vec4<f32>(1.0)), vec4<f32>(view.gamma));
    var colour = vec3<f32>(0.0);
    for (var c = 0u; c < min(view.channels, 4u); c = c + 1u) {
        let cc = view.channel_colour[c];
        colour = colour + cc.rgb * cc.w * t[c];
    }
    return min(colour, vec3<f32>(1.0));
}

@fragment
fn fs_main(@builtin(position) pos: vec4<f32>) -> @location(0) vec4<f32> {
    let zoom = view.zoom;
    let ip = view.origin + (pos.xy - view.rect_min) / zoom;
    let size = view.image_size;
    if (ip.x < 0.0 || ip.y < 0.0 || ip.x >= size.x || ip.y >= size.y) {
        if (view.background == 0u) {
            discard;
        }
        return vec4<f32>(0.08, 0.08, 0.09, 1.0);
    }
    let pixel = floor(ip);
    if (pixel.x < view.tile_core.x || pixel.y < view.tile_core.y || pixel.x >= view.tile_core.z || pixel.y >= view.tile_core.w) {
        discard;
    }
    var raw: vec4<f32>;
    if (zoom >= 1.0) {
        // Magnified: nearest neighbour, every image pixel a crisp square.
        raw = raw_at(vec2<i32>(floor(ip)));
    } else {
        // Minified: bilinear between pixel centres (float textures are not filterable
        // everywhere, so the four taps are loaded by hand).
        let q = ip - vec2<f32>(0.5, 0.5);
        let f = fract(q);
        let p0 = vec2<i32>(floor(q));
        let top = mix(raw_at(p0), raw_at(p0 + vec2<i32>(1, 0)), f.x);
        let bottom = mix(raw_at(p0 + vec2<i32>(0, 1)), raw_at(p0 + vec2<i32>(1, 1)), f.x);
        raw = mix(top, bottom, f.y);
    }
    var colour = composite(raw);
    let flags = view.flags;
    let texel = vec2<i32>(pixel) - vec2<i32>(view.tile_origin);
    if ((flags & 4u) != 0u) {
        let m = textureLoad(map_tex, texel, 0).r;
        if ((flags & 8u) != 0u) {
            let k = u32(m + 0.5);
            if (k > 0u) {
                let pc = textureLoad(palette_tex, vec2<i32>(i32(k), 0), 0).rgb;
                colour = mix(colour, pc, view.map_opacity);
            }
        } else {
            let span_m = max(view.map_hot - view.map_cold, 1e-20);
            colour = mix(colour, heat((m - view.map_cold) / span_m), view.map_opacity);
        }
    }
    let label = textureLoad(label_tex, texel, 0).r;
    if ((flags & 2u) != 0u && label == 0u) {
        colour = colour * 0.3;
    }
    if ((flags & 1u) != 0u && label > 0u) {
        let pc = textureLoad(palette_tex, vec2<i32>(i32(label), 0), 0).rgb;
        colour = mix(colour, pc, view.label_opacity);
    }
    return vec4<f32>(colour, 1.0);
}
