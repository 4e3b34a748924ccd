// Augmentation view: the elastically deformed image (contrast window + gamma on the raw
// values) with the deformation drawn as a warped grid. Every output pixel p was sampled from
// the source position q = p + d(p); where q lies on a line of a regular grid in the source
// image, the pixel is painted in the grid colour, so the lines bend the way the image did.

struct Uniforms {
    // callback rect min (framebuffer px), framebuffer px per image px, gamma
    a: vec4<f32>,
    // window min, window max, grid spacing (source px), half line width (framebuffer px)
    b: vec4<f32>,
    // image width, image height, grid opacity, unused
    c: vec4<f32>,
};

@group(0) @binding(0) var<uniform> u: Uniforms;
@group(0) @binding(1) var image_tex: texture_2d<f32>;
@group(0) @binding(2) var field_tex: texture_2d<f32>;

@vertex
fn vs_main(@builtin(vertex_index) i: u32) -> @builtin(position) vec4<f32> {
    let x = f32((i << 1u) & 2u) * 2.0 - 1.0;
    let y = f32(i & 2u) * 2.0 - 1.0;
    return vec4<f32>(x, y, 0.0, 1.0);
}

// Distance (source px) from v to the nearest multiple of the spacing g.
fn to_line(v: f32, g: f32) -> f32 {
    return abs(v - round(v / g) * g);
}

@fragment
fn fs_main(@builtin(position) pos: vec4<f32>) -> @location(0) vec4<f32> {
    let scale = u.a.z;
    let p = (pos.xy - u.a.xy) / scale;
    if (p.x < 0.0 || p.y < 0.0 || p.x >= u.c.x || p.y >= u.c.y) {
        discard;
    }
    let texel = vec2<i32>(floor(p));
    let raw = textureLoad(image_tex, texel, 0).r;
    let span = max(u.b.y - u.b.x, 1e-20);
    var colour = vec3<f32>(pow(clamp((raw - u.b.x) / span, 0.0, 1.0), u.a.w));
    let q = p + textureLoad(field_tex, texel, 0).rg;
    let g = u.b.z;
    let d = min(to_line(q.x, g), to_line(q.y, g)) * scale;
    if (d < u.b.w) {
        colour = mix(colour, vec3<f32>(1.0, 0.78, 0.0), u.c.z);
    }
    return vec4<f32>(colour, 1.0);
}
