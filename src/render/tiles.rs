//! How a slice is split into textures no larger than the device allows: tiles whose cores
//! cover every pixel once, each with a one-pixel halo so that bilinear taps across a border
//! read the neighbour's pixels.

/// One texture tile of a slice: the image pixels it draws (`core`) and the pixels its
/// textures hold (`tex`: the core plus a one-pixel halo towards neighbouring tiles, so that
/// bilinear minification is seamless across tile borders). Rectangles are `[x0, y0, x1, y1)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileRect {
    /// Pixels drawn.
    pub core: [u32; 4],
    /// Pixels held by the textures.
    pub tex: [u32; 4],
}

/// Spans of one axis: `(core0, core1, tex0, tex1)`.
fn spans(len: u32, max_edge: u32) -> Vec<(u32, u32, u32, u32)> {
    if len <= max_edge {
        return vec![(0, len, 0, len)];
    }
    let stride = max_edge.saturating_sub(2).max(1);
    (0..len)
        .step_by(stride as usize)
        .map(|c0| {
            let c1 = (c0 + stride).min(len);
            (c0, c1, c0.saturating_sub(1), (c1 + 1).min(len))
        })
        .collect()
}

/// How an image of `width x height` is split into textures of at most `max_edge` pixels per
/// side: one tile when it fits, otherwise a grid, row by row.
pub fn tile_layout(width: u32, height: u32, max_edge: u32) -> Vec<TileRect> {
    let xs = spans(width, max_edge);
    let ys = spans(height, max_edge);
    ys.iter()
        .flat_map(|&(cy0, cy1, ty0, ty1)| {
            xs.iter().map(move |&(cx0, cx1, tx0, tx1)| TileRect {
                core: [cx0, cy0, cx1, cy1],
                tex: [tx0, ty0, tx1, ty1],
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_tile_when_the_image_fits() {
        assert_eq!(
            tile_layout(300, 200, 300),
            vec![TileRect {
                core: [0, 0, 300, 200],
                tex: [0, 0, 300, 200]
            }]
        );
    }

    #[test]
    fn tiles_cover_every_pixel_once_with_a_halo_within_the_limit() {
        for (w, h, edge) in [
            (1000, 300, 256),
            (8193, 5, 4096),
            (17, 23, 3),
            (512, 512, 200),
        ] {
            let tiles = tile_layout(w, h, edge);
            let mut covered = vec![0u8; (w * h) as usize];
            for t in &tiles {
                let [x0, y0, x1, y1] = t.core;
                let [a0, b0, a1, b1] = t.tex;
                assert!(a1 - a0 <= edge && b1 - b0 <= edge, "{t:?} within {edge}");
                // The halo: one pixel on each inner side, none at the image border.
                assert_eq!(a0, x0.saturating_sub(1));
                assert_eq!(b0, y0.saturating_sub(1));
                assert_eq!(a1, (x1 + 1).min(w));
                assert_eq!(b1, (y1 + 1).min(h));
                for y in y0..y1 {
                    for x in x0..x1 {
                        covered[(y * w + x) as usize] += 1;
                    }
                }
            }
            assert!(covered.iter().all(|&c| c == 1), "{w}x{h} edge {edge}");
        }
        // 512 with edge 200: cores of 198 px -> 3 x 3 tiles.
        assert_eq!(tile_layout(512, 512, 200).len(), 9);
    }
}
