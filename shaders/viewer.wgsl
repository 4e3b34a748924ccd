// Image viewer: per-channel contrast windows + gamma on the raw values, the shown channels
// added in their colours (Fiji's composite; one white channel for grey images), label overlay
// through a palette, and the network's overlays computed here from its class probabilities
// (one texture layer per class): the probability of one class, the mask by the model's rule,
// the uncertainty (entropy / ln K).
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
    overlay: u32,            // 0 none, 1 map_tex in heat colours, 2 probability of
                             // overlay_class, 3 mask, 4 uncertainty (see OVERLAY_* in viewer.rs)
    label_opacity: f32,
    flags: u32,              // 1 = show labels, 2 = dim unlabelled, 4 = the mask closes gaps
                             // along lines_tex
    map_opacity: f32,
    map_cold: f32,           // map value shown cold
    map_hot: f32,            // map value shown hot
    threshold: f32,          // mask of two classes: class 2 where its probability > threshold;
                             // negative: the most probable class
    tile_core: vec4<f32>,    // the image pixels this tile draws: x0, y0, x1, y1 (exclusive)
    tile_origin: vec2<f32>,  // image coordinates of the tile textures' first texel
    background: u32,         // 1 = this tile draws the background outside the image
    overlay_class: u32,      // class shown by the probability overlay, 0-based
    channel_min: vec4<f32>,  // per channel: raw value shown black
    channel_max: vec4<f32>,  // per channel: raw value shown at full colour
    channel_colour: array<vec4<f32>, 4>, // per channel: rgb, and w = 1 when shown
};

@group(0) @binding(0) var<uniform> view: View;
@group(0) @binding(1) var image_tex: texture_2d<f32>;
@group(0) @binding(2) var label_tex: texture_2d<u32>;
@group(0) @binding(3) var palette_tex: texture_2d<f32>;
@group(0) @binding(4) var map_tex: texture_2d<f32>;
@group(0) @binding(5) var prob_tex: texture_2d_array<f32>; // layer k: probability of class k + 1
@group(0) @binding(6) var lines_tex: texture_2d<u32>;      // 1 on the gap-closing lines

// Heat colour map (black, red, yellow, white) of t in 0..1.
fn heat(t: f32) -> vec3<f32> {
    let x = clamp(t, 0.0, 1.0);
    return vec3<f32>(clamp(3.0 * x, 0.0, 1.0), clamp(3.0 * x - 1.0, 0.0, 1.0), clamp(3.0 * x - 2.0, 0.0, 1.0));
}

// The mask's class (1-based) at a texel: class 2 above the threshold (and off the gap-closing
// lines) for two classes with a rule, else the most probable class (the first of equals), as
// postprocess::Decision::classes.
fn mask_class(texel: vec2<i32>) -> u32 {
    let k = textureNumLayers(prob_tex);
    if (k == 2u && view.threshold >= 0.0) {
        let cell = textureLoad(prob_tex, texel, 1, 0).r > view.threshold;
        let line = (view.flags & 4u) != 0u && textureLoad(lines_tex, texel, 0).r != 0u;
        return select(1u, 2u, cell && !line);
    }
    var best = 0u;
    var best_p = textureLoad(prob_tex, texel, 0, 0).r;
    for (var c = 1u; c < k; c = c + 1u) {
        let p = textureLoad(prob_tex, texel, c, 0).r;
        if (p > best_p) {
            best = c;
            best_p = p;
        }
    }
    return best + 1u;
}

// Entropy of the class distribution at a texel over ln K (0 certain, 1 undecided), as
// ml::entropy divided by ln max(K, 2).
fn uncertainty(texel: vec2<i32>) -> f32 {
    let k = textureNumLayers(prob_tex);
    var h = 0.0;
    for (var c = 0u; c < k; c = c + 1u) {
        let p = textureLoad(prob_tex, texel, c, 0).r;
        if (p > 0.0) {
            h = h - p * log(p);
        }
    }
    return h / log(f32(max(k, 2u)));
}

// `colour` under the overlay of this texel: a map or a probability in heat colours, the
// mask in its classes' colours, at the overlay's opacity.
fn overlay_colour(colour: vec3<f32>, texel: vec2<i32>) -> vec3<f32> {
    let span_m = max(view.map_hot - view.map_cold, 1e-20);
    switch view.overlay {
        case 1u: {
            let m = textureLoad(map_tex, texel, 0).r;
            return mix(colour, heat((m - view.map_cold) / span_m), view.map_opacity);
        }
        case 2u: {
            let layer = min(view.overlay_class, textureNumLayers(prob_tex) - 1u);
            let p = textureLoad(prob_tex, texel, layer, 0).r;
            return mix(colour, heat((p - view.map_cold) / span_m), view.map_opacity);
        }
        case 3u: {
            let pc = textureLoad(palette_tex, vec2<i32>(i32(mask_class(texel)), 0), 0).rgb;
            return mix(colour, pc, view.map_opacity);
        }
        case 4u: {
            return mix(colour, heat((uncertainty(texel) - view.map_cold) / span_m), view.map_opacity);
        }
        default: {
            return colour;
        }
    }
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
    colour = overlay_colour(colour, texel);
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
