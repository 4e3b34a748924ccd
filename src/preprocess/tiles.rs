//! Overlap-tile geometry: which tile sizes a U-Net can take, and where the tiles go.

/// Convolution padding of the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ConvPadding {
    /// No padding (the paper): each 3x3 convolution shrinks the map by 2 pixels.
    Valid,
    /// Zero padding: the output has the input's size.
    Same,
}

/// The tile geometry of a U-Net with `depth` poolings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileGeometry {
    /// Number of 2x2 max-poolings (paper: 4).
    pub depth: usize,
    /// Convolution padding.
    pub padding: ConvPadding,
}

impl TileGeometry {
    /// The output edge for an input edge, or `None` when some pooling would see an odd size
    /// or a map would vanish.
    pub fn output_size(&self, input: usize) -> Option<usize> {
        let shrink = match self.padding {
            ConvPadding::Valid => 4,
            ConvPadding::Same => 0,
        };
        let mut s = input;
        for _ in 0..self.depth {
            s = s.checked_sub(shrink)?;
            if s == 0 || !s.is_multiple_of(2) {
                return None;
            }
            s /= 2;
        }
        s = s.checked_sub(shrink)?;
        if s == 0 {
            return None;
        }
        for _ in 0..self.depth {
            s = (2 * s).checked_sub(shrink)?;
            if s == 0 {
                return None;
            }
        }
        Some(s)
    }

    /// The input edge that yields exactly `output`, if any.
    pub fn input_size(&self, output: usize) -> Option<usize> {
        let grow = match self.padding {
            ConvPadding::Valid => 4,
            ConvPadding::Same => 0,
        };
        let mut s = output;
        for _ in 0..self.depth {
            s += grow;
            if !s.is_multiple_of(2) {
                return None;
            }
            s /= 2;
        }
        s += grow;
        for _ in 0..self.depth {
            s = 2 * s + grow;
        }
        (self.output_size(s) == Some(output)).then_some(s)
    }

    /// Context margin on each side: `(input - output) / 2` (92 px for the paper's net).
    pub fn margin(&self, output: usize) -> Option<usize> {
        self.input_size(output).map(|i| (i - output) / 2)
    }

    /// Every valid output edge from 1 up to `max_output`, ascending.
    pub fn valid_outputs(&self, max_output: usize) -> Vec<usize> {
        (1..=max_output)
            .filter(|&o| self.input_size(o).is_some())
            .collect()
    }

    /// The valid output edge nearest to `requested` (ties go to the smaller one).
    pub fn nearest_valid_output(&self, requested: usize) -> usize {
        let step = 1usize << self.depth;
        let mut best = None::<usize>;
        // Valid outputs repeat with period 2^depth; search a window around the request.
        let lo = requested.saturating_sub(step);
        for o in lo.max(1)..=requested + step {
            if self.input_size(o).is_some() {
                let better = match best {
                    None => true,
                    Some(b) => o.abs_diff(requested) < b.abs_diff(requested),
                };
                if better {
                    best = Some(o);
                }
            }
        }
        best.unwrap_or_else(|| {
            self.valid_outputs(4 * step)
                .first()
                .copied()
                .unwrap_or(step)
        })
    }
}

/// Top-left output coordinates of tiles of edge `tile` covering `0..len`, every one a
/// multiple of `align`.
///
/// A U-Net with `depth` 2x2 poolings is translation-equivariant only for shifts that are
/// multiples of `2^depth`; tiles placed on that grid therefore stitch into exactly the
/// whole-image prediction. Tiles step by the largest multiple of `align` not above `tile`
/// (they overlap when `tile` is not a multiple); the last one starts at the first aligned
/// position that lets it reach `len` and may extend past it (the input there is mirrored).
pub fn tile_origins(len: usize, tile: usize, align: usize) -> Vec<usize> {
    let align = align.max(1);
    let stride = ((tile / align) * align).max(align);
    let mut v = vec![0usize];
    let mut o = 0usize;
    while o + tile < len {
        let last = (len - tile).next_multiple_of(align);
        o = (o + stride).min(last);
        v.push(o);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAPER: TileGeometry = TileGeometry {
        depth: 4,
        padding: ConvPadding::Valid,
    };

    #[test]
    fn paper_net_maps_572_to_388() {
        assert_eq!(PAPER.output_size(572), Some(388));
        assert_eq!(PAPER.input_size(388), Some(572));
        assert_eq!(PAPER.margin(388), Some(92));
        assert_eq!(PAPER.input_size(68), Some(252));
        assert_eq!(PAPER.output_size(570), None);
    }

    #[test]
    fn valid_sizes_match_hand_computation() {
        // Depth 4, valid: output o works iff (o + 4) / 2 ... is integral at every up step,
        // i.e. o = 16 k - 4 for k >= 1 ... checked by hand for the first few:
        // o=4 -> in 188? walk: 8/2=4, 8/2=4, 8/2=4, 8/2=4, +4=8, 20, 44, 92, 188.
        assert_eq!(PAPER.input_size(4), Some(188));
        assert_eq!(PAPER.valid_outputs(60), vec![4, 20, 36, 52]);
        assert_eq!(PAPER.nearest_valid_output(390), 388);
        assert_eq!(PAPER.nearest_valid_output(380), 372);
        let same = TileGeometry {
            depth: 2,
            padding: ConvPadding::Same,
        };
        assert_eq!(same.valid_outputs(20), vec![4, 8, 12, 16, 20]);
        assert_eq!(same.margin(8), Some(0));
    }

    #[test]
    fn tile_origins_cover_everything_on_the_pooling_grid() {
        assert_eq!(tile_origins(10, 4, 1), vec![0, 4, 6]);
        assert_eq!(tile_origins(8, 4, 1), vec![0, 4]);
        assert_eq!(tile_origins(3, 4, 1), vec![0]);
        // 100 px with 36 px tiles on a 16 px grid: stride 32, last at 64 reaches 100.
        assert_eq!(tile_origins(100, 36, 16), vec![0, 32, 64]);
        // 512 px with 388 px tiles: the second tile starts at ceil16(512 - 388) = 128.
        assert_eq!(tile_origins(512, 388, 16), vec![0, 128]);
        for (len, tile) in [(1000usize, 68usize), (37, 20), (700, 388)] {
            let o = tile_origins(len, tile, 16);
            assert!(o.iter().all(|x| x % 16 == 0));
            assert!(o.last().unwrap() + tile >= len);
            assert!(o.windows(2).all(|w| w[1] > w[0] && w[1] <= w[0] + tile));
        }
    }
}
