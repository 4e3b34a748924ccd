//! The 3x3 convolution by Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray, "Fast
//! Algorithms for Convolutional Neural Networks", CVPR 2016), for CPUs with AVX-512, on the
//! wide maps of the top levels: each 2 x 2 block of outputs ("tile") comes from a 4 x 4 block
//! of inputs as `Y = A^T [(G g G^T) . (B^T d B)] A`, 16 products per tile and channel pair
//! where the definition takes 36.
//!
//! Vectors hold 16 neighbouring tiles of one tile row, so that every step works in the maps'
//! own layout: the input's 4 x 4 blocks are gathered from its rows by even/odd lane
//! permutations, and the inverse transform's two output columns per tile are interleaved back
//! into output rows; nothing is transposed. Each task takes one tile row and, per group of 32
//! tiles, transforms the input of all its channels into a buffer that stays in the L1/L2
//! cache, multiplies it by the transformed weights (per position of the 4 x 4 block, a
//! register block of 8 output channels x 32 tiles: per input channel 2 loads, 8 broadcasts,
//! 16 fused multiply-adds) and transforms the products back into its two output rows, with the
//! bias and the ReLU. The weights are transformed once per pass, in parallel by input channel.
//!
//! A padding of `pad` pixels is implicit (masked loads), so the input gradient (the forward
//! pass of `dY` padded by 2 with [`Taps::Flipped`] weights) runs here as well. Results equal
//! the definition up to rounding (the transforms add and halve values; `conv3x3`'s tests run
//! this kernel on all their shapes against the definition). Layouts are those of
//! [`super::conv3x3`], which chooses this kernel where it was measured faster.

use std::arch::x86_64::{
    __m512, __m512i, __mmask16, _mm512_add_ps, _mm512_fmadd_ps, _mm512_load_ps, _mm512_loadu_ps,
    _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_max_ps, _mm512_permutex2var_ps,
    _mm512_set1_ps, _mm512_setr_epi32, _mm512_setzero_ps, _mm512_store_ps, _mm512_sub_ps,
};
use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::avx512::lanes;
use super::common::SharedOut;
use super::common::Taps;

/// Output channels per register block.
const CO: usize = 8;
/// Vectors of 16 tiles per group (and register block).
const TV: usize = 2;
/// Tiles per group.
const GT: usize = TV * 16;
/// Positions of a transformed 4 x 4 block.
const XI: usize = 16;

/// Whether this CPU runs this module's kernel.
pub fn available() -> bool {
    super::avx512::available()
}

/// Forward pass of one image with `pad` pixels of implicit zero padding on every side: `x`
/// `Cin x H x W`, `weight` (`Cout x Cin x 3 x 3` in effect), into `y` (`Cout x (H+2pad-2) x
/// (W+2pad-2)` values, every one written: it may start uninitialised) plus `bias`, through a
/// ReLU when `relu`.
///
/// # Panics
/// If the CPU lacks AVX-512F ([`available`]) or the sizes disagree.
pub fn forward_into(
    x: &[f32],
    weight: Taps<'_>,
    bias: Option<&[f32]>,
    (cin, cout, h, w): (usize, usize, usize, usize),
    pad: usize,
    relu: bool,
    y: &mut [MaybeUninit<f32>],
) {
    assert!(available(), "winograd: the CPU lacks AVX-512F");
    let (ho, wo) = super::common::check_forward(x, weight, bias, (cin, cout, h, w), pad, y.len());
    let coutp = cout.next_multiple_of(CO);
    let u = transform_weights(weight, cin, cout, coutp);
    let mut biases = vec![0.0f32; coutp];
    if let Some(b) = bias {
        biases[..cout].copy_from_slice(b);
    }
    let (th, tw) = (ho.div_ceil(2), wo.div_ceil(2));
    let out = SharedOut(y.as_mut_ptr().cast::<f32>());
    let map = Map {
        x,
        dims: (cin, h, w),
        pad,
    };
    (0..th).into_par_iter().for_each_init(
        || (Aligned::new(XI * cin * GT), Aligned::new(XI * CO * GT)),
        |(vb, mb), i| {
            let (vb, mb) = (vb.floats(), mb.floats());
            let mut j0 = 0;
            while j0 < tw {
                let nv = (tw - j0).div_ceil(16).min(TV);
                // SAFETY: AVX-512F is present (asserted). `input_group` reads `x` under
                // masks of the rows and columns inside the image and writes `XI * cin` rows
                // of `nv` vectors of `vb`; `products` reads those and block `cb`'s weights
                // (inside `u`, `coutp` channels) and writes `XI * CO` rows of `mb`;
                // `inverse_group` writes, of channels `cb * CO + c < cout`, output rows
                // `2i, 2i + 1 < ho` at columns `< wo` (masked): inside `y`, and only this
                // task writes tile row `i`.
                let group = Group { i, j0, nv };
                unsafe {
                    input_group(&map, group, vb);
                    for cb in 0..coutp / CO {
                        let ub = u[cb * CO..].as_ptr();
                        if nv == 2 {
                            products::<2>(vb, ub, (cin, coutp), mb);
                        } else {
                            products::<1>(vb, ub, (cin, coutp), mb);
                        }
                        let nco = CO.min(cout - cb * CO);
                        let bias = &biases[cb * CO..][..CO];
                        let y = out.at(cb * CO * ho * wo);
                        inverse_group(mb, bias, relu, (ho, wo, nco), group, y);
                    }
                }
                j0 += nv * 16;
            }
        },
    );
}

/// The transformed weights `U = G g G^T` of every channel pair, `Cin x 16 x coutp` (zero
/// past `cout`): for position `xi` and input channel `ci` the output channels are
/// contiguous, as the products broadcast them.
fn transform_weights(weight: Taps<'_>, cin: usize, cout: usize, coutp: usize) -> Vec<f32> {
    let mut u = vec![0.0f32; cin * XI * coutp];
    u.par_chunks_mut(XI * coutp)
        .enumerate()
        .for_each(|(ci, uc)| {
            for co in 0..cout {
                let g: [f32; 9] = std::array::from_fn(|t| weight.at((cin, cout), co, ci, t));
                // G g (4 x 3), then (G g) G^T (4 x 4); G's rows: (1, 0, 0), (1, 1, 1) / 2,
                // (1, -1, 1) / 2, (0, 0, 1).
                let gg: [[f32; 3]; 4] = std::array::from_fn(|r| {
                    std::array::from_fn(|c| {
                        let (a, b, d) = (g[c], g[3 + c], g[6 + c]);
                        match r {
                            0 => a,
                            1 => 0.5 * (a + b + d),
                            2 => 0.5 * (a - b + d),
                            _ => d,
                        }
                    })
                });
                for (r, row) in gg.iter().enumerate() {
                    let (a, b, d) = (row[0], row[1], row[2]);
                    let t = [a, 0.5 * (a + b + d), 0.5 * (a - b + d), d];
                    for (c, v) in t.into_iter().enumerate() {
                        uc[(4 * r + c) * coutp + co] = v;
                    }
                }
            }
        });
    u
}

/// A zero-initialised buffer of floats whose first one is 64-byte aligned (whole-line
/// vector loads and stores).
struct Aligned {
    buf: Vec<f32>,
    start: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Self {
        let buf = vec![0.0f32; len + 16];
        let start = buf.as_ptr().align_offset(64).min(16);
        Self { buf, start, len }
    }

    fn floats(&mut self) -> &mut [f32] {
        &mut self.buf[self.start..self.start + self.len]
    }
}

/// The input of a pass: `x` (`Cin x H x W`) with `pad` pixels of implicit zeros around it.
struct Map<'a> {
    x: &'a [f32],
    dims: (usize, usize, usize),
    pad: usize,
}

/// The tiles `j0 .. j0 + 16 nv` of tile row `i`.
#[derive(Clone, Copy)]
struct Group {
    i: usize,
    j0: usize,
    nv: usize,
}

/// The 16 lanes `v[k]` as a permutation index vector.
#[target_feature(enable = "avx512f")]
fn index(v: [i32; 16]) -> __m512i {
    _mm512_setr_epi32(
        v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12], v[13],
        v[14], v[15],
    )
}

/// Transforms the input of the group's tiles for every channel:
/// `V = B^T d B` into `vb` (row `xi * cin + ci` of [`GT`] floats, vectors of 16 tiles).
///
/// # Safety
/// AVX-512F; `vb` holds `XI * cin * GT` floats, 64-byte aligned.
#[target_feature(enable = "avx512f")]
unsafe fn input_group(map: &Map<'_>, group: Group, vb: &mut [f32]) {
    let Group { i, j0, nv } = group;
    let (cin, h, w) = map.dims;
    let even = index(std::array::from_fn(|k| 2 * k as i32));
    let odd = index(std::array::from_fn(|k| 2 * k as i32 + 1));
    let (wi, pad) = (w as isize, map.pad as isize);
    // 16 lanes from column c0 of an input row: the lanes inside the row, zeros elsewhere.
    let mask = |c0: isize| -> __mmask16 {
        let lo = (-c0).clamp(0, 16) as usize;
        let hi = (wi - c0).clamp(0, 16) as usize;
        lanes(hi) & !lanes(lo)
    };
    for v in 0..nv {
        // Input column of lane 0 of the tiles' first column, and the masks of the 4 loads.
        let c0 = 2 * (j0 + 16 * v) as isize - pad;
        let offsets = [c0, c0 + 16, c0 + 2, c0 + 18];
        let masks = offsets.map(mask);
        let whole = masks.iter().all(|&m| m == 0xffff);
        for ci in 0..cin {
            let mut d = [[_mm512_setzero_ps(); 4]; 4];
            for (r, dr) in d.iter_mut().enumerate() {
                let row = (2 * i + r) as isize - pad;
                if row < 0 || row >= h as isize {
                    continue;
                }
                let p = map.x.as_ptr().wrapping_add((ci * h + row as usize) * w);
                let ld = |k: usize| {
                    let at = p.wrapping_offset(offsets[k]);
                    // SAFETY: the lanes under the mask lie inside row `row` of channel `ci`
                    // (columns 0 .. w); masked-off lanes are not read. Whole masks: all 16.
                    unsafe {
                        if whole {
                            _mm512_loadu_ps(at)
                        } else {
                            _mm512_maskz_loadu_ps(masks[k], at)
                        }
                    }
                };
                let (a, b, a2, b2) = (ld(0), ld(1), ld(2), ld(3));
                dr[0] = _mm512_permutex2var_ps(a, even, b);
                dr[1] = _mm512_permutex2var_ps(a, odd, b);
                dr[2] = _mm512_permutex2var_ps(a2, even, b2);
                dr[3] = _mm512_permutex2var_ps(a2, odd, b2);
            }
            // B^T d along the rows, then (B^T d) B along the columns; B^T's rows: (1, 0, -1,
            // 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1).
            let t: [[__m512; 4]; 4] = [
                std::array::from_fn(|c| _mm512_sub_ps(d[0][c], d[2][c])),
                std::array::from_fn(|c| _mm512_add_ps(d[1][c], d[2][c])),
                std::array::from_fn(|c| _mm512_sub_ps(d[2][c], d[1][c])),
                std::array::from_fn(|c| _mm512_sub_ps(d[1][c], d[3][c])),
            ];
            for (a, ta) in t.iter().enumerate() {
                let vv = [
                    _mm512_sub_ps(ta[0], ta[2]),
                    _mm512_add_ps(ta[1], ta[2]),
                    _mm512_sub_ps(ta[2], ta[1]),
                    _mm512_sub_ps(ta[1], ta[3]),
                ];
                for (b, val) in vv.into_iter().enumerate() {
                    let at = ((4 * a + b) * cin + ci) * GT + 16 * v;
                    // SAFETY: row `xi * cin + ci` of `vb`, vector `v < TV`: inside, and
                    // 64-byte aligned (GT and 16 are multiples of 16 floats).
                    unsafe { _mm512_store_ps(vb.as_mut_ptr().add(at), val) };
                }
            }
        }
    }
}

/// `M_xi = V_xi . U_xi` for a block of [`CO`] output channels and `NV` vectors of tiles, into
/// `mb` (row `xi * CO + c` of [`GT`] floats).
///
/// # Safety
/// AVX-512F; `vb` as [`input_group`] wrote it; `ub` points at the block's first channel in
/// [`transform_weights`]'s `Cin x 16 x coutp` floats (`channels = (cin, coutp)`), with
/// [`CO`] channels from there; `mb` holds `XI * CO * GT` floats, 64-byte aligned.
#[target_feature(enable = "avx512f")]
unsafe fn products<const NV: usize>(
    vb: &[f32],
    ub: *const f32,
    (cin, coutp): (usize, usize),
    mb: &mut [f32],
) {
    for xi in 0..XI {
        let mut acc = [[_mm512_setzero_ps(); NV]; CO];
        let vx = vb[xi * cin * GT..].as_ptr();
        for ci in 0..cin {
            // SAFETY: row `xi * cin + ci` of `vb` (aligned, NV <= TV vectors) and the
            // block's weights of position `xi`, channel `ci` (caller).
            unsafe {
                let vv: [__m512; NV] =
                    std::array::from_fn(|n| _mm512_load_ps(vx.add(ci * GT + 16 * n)));
                let uc = ub.add((ci * XI + xi) * coutp);
                for (c, row) in acc.iter_mut().enumerate() {
                    let wv = _mm512_set1_ps(*uc.add(c));
                    for n in 0..NV {
                        row[n] = _mm512_fmadd_ps(wv, vv[n], row[n]);
                    }
                }
            }
        }
        for (c, row) in acc.iter().enumerate() {
            for (n, v) in row.iter().enumerate() {
                // SAFETY: row `xi * CO + c` of `mb`, vector `n < TV`: inside, aligned.
                unsafe { _mm512_store_ps(mb.as_mut_ptr().add((xi * CO + c) * GT + 16 * n), *v) };
            }
        }
    }
}

/// `Y = A^T M A` of the group's tiles for the block's `nco` real channels, plus `bias`,
/// through a ReLU when `relu`, stored into output rows `2i` and `2i + 1` (those `< ho`) at
/// columns `2 j0 ..` (those `< wo`) of the block's channels, `y` pointing at its first.
///
/// # Safety
/// AVX-512F; `mb` as [`products`] wrote it for `group.nv` vectors; `y` valid for writes of
/// `nco` planes of `ho x wo` floats.
#[target_feature(enable = "avx512f")]
unsafe fn inverse_group(
    mb: &[f32],
    bias: &[f32],
    relu: bool,
    (ho, wo, nco): (usize, usize, usize),
    group: Group,
    y: *mut f32,
) {
    // Lanes 0-7 and 8-15 of the two output columns, interleaved into 32 outputs of a row.
    let lo = index(std::array::from_fn(|k| (k / 2 + 16 * (k % 2)) as i32));
    let hi = index(std::array::from_fn(|k| (8 + k / 2 + 16 * (k % 2)) as i32));
    for (c, &bc) in bias.iter().enumerate().take(nco) {
        let bv = _mm512_set1_ps(bc);
        for n in 0..group.nv {
            // SAFETY: rows `xi * CO + c` of `mb`, vector `n` (caller): inside, aligned.
            let m: [__m512; XI] = std::array::from_fn(|xi| unsafe {
                _mm512_load_ps(mb.as_ptr().add((xi * CO + c) * GT + 16 * n))
            });
            // A^T M along the rows; A^T's rows: (1, 1, 1, 0), (0, 1, -1, -1).
            let s: [[__m512; 4]; 2] = [
                std::array::from_fn(|b| _mm512_add_ps(_mm512_add_ps(m[b], m[4 + b]), m[8 + b])),
                std::array::from_fn(|b| {
                    _mm512_sub_ps(_mm512_sub_ps(m[4 + b], m[8 + b]), m[12 + b])
                }),
            ];
            let col = 2 * (group.j0 + 16 * n);
            for (a, sa) in s.iter().enumerate() {
                let oy = 2 * group.i + a;
                if oy >= ho {
                    break;
                }
                let mut y0 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(sa[0], sa[1]), sa[2]), bv);
                let mut y1 = _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(sa[1], sa[2]), sa[3]), bv);
                if relu {
                    y0 = _mm512_max_ps(y0, _mm512_setzero_ps());
                    y1 = _mm512_max_ps(y1, _mm512_setzero_ps());
                }
                let row = y.wrapping_add(c * ho * wo + oy * wo + col);
                // SAFETY: the lanes under the masks are outputs (c, oy, col + k) with
                // col + k < wo, inside the block's planes (caller).
                unsafe {
                    _mm512_mask_storeu_ps(
                        row,
                        lanes(wo.saturating_sub(col)),
                        _mm512_permutex2var_ps(y0, lo, y1),
                    );
                    _mm512_mask_storeu_ps(
                        row.wrapping_add(16),
                        lanes(wo.saturating_sub(col + 16)),
                        _mm512_permutex2var_ps(y0, hi, y1),
                    );
                }
            }
        }
    }
}
