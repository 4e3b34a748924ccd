//! 2x2 max pooling (stride 2) and its gradient, which routes each output's gradient to the
//! largest of its four inputs (the first of equal ones, as the forward pass chose).

use rayon::prelude::*;

use super::common::planes_per_task;
use super::dispatch::wide;

/// 2x2 max pooling with stride 2 of `planes` maps of `h x w` (NCHW with `N C` planes): the
/// output is `planes x h/2 x w/2`; an odd last row or column is dropped, as burn's `max_pool2d`
/// does.
pub fn pool2x2_forward(x: &[f32], planes: usize, h: usize, w: usize) -> Vec<f32> {
    let mut y = vec![0.0f32; planes * (h / 2) * (w / 2)];
    pool2x2_forward_into(x, planes, h, w, &mut y);
    y
}

/// [`pool2x2_forward`] into `y` (all overwritten).
pub fn pool2x2_forward_into(x: &[f32], planes: usize, h: usize, w: usize, y: &mut [f32]) {
    let (ho, wo) = (h / 2, w / 2);
    assert_eq!(x.len(), planes * h * w, "pool2x2: input size");
    assert_eq!(y.len(), planes * ho * wo, "pool2x2: output size");
    if ho == 0 || wo == 0 {
        return;
    }
    y.par_chunks_mut(ho * wo)
        .with_min_len(planes_per_task(ho * wo))
        .zip(x.par_chunks(h * w))
        .for_each(|(yp, xp)| pool2x2_forward_plane_wide(xp, (h, w), yp));
}

/// [`pool2x2_forward_into`] of one plane.
#[inline(always)]
pub(crate) fn pool2x2_forward_plane(xp: &[f32], (_, w): (usize, usize), yp: &mut [f32]) {
    let wo = w / 2;
    for (i, yrow) in yp.chunks_exact_mut(wo).enumerate() {
        let (r0, _) = xp[2 * i * w..2 * i * w + 2 * wo].as_chunks::<2>();
        let (r1, _) = xp[(2 * i + 1) * w..(2 * i + 1) * w + 2 * wo].as_chunks::<2>();
        for ((o, a), b) in yrow.iter_mut().zip(r0).zip(r1) {
            *o = a[0].max(a[1]).max(b[0].max(b[1]));
        }
    }
}

/// Input gradient of [`pool2x2_forward`] into `dx` (all overwritten): each output's gradient
/// goes to the first maximum of its window (in the order top-left, top-right, bottom-left,
/// bottom-right, as burn's indices pick it); every other input, and a dropped odd row or
/// column, gets 0.
pub fn pool2x2_backward_into(
    x: &[f32],
    dy: &[f32],
    planes: usize,
    h: usize,
    w: usize,
    dx: &mut [f32],
) {
    pool2x2_backward_with(x, dy, (planes, h, w), false, dx);
}

/// [`pool2x2_backward_into`] added to the values of `dx` (another gradient of the pooling's
/// input: the U-Net's skip connection), in the same pass.
pub fn pool2x2_backward_add_into(
    x: &[f32],
    dy: &[f32],
    planes: usize,
    h: usize,
    w: usize,
    dx: &mut [f32],
) {
    pool2x2_backward_with(x, dy, (planes, h, w), true, dx);
}

/// [`pool2x2_backward_into`], or with `add` [`pool2x2_backward_add_into`].
fn pool2x2_backward_with(
    x: &[f32],
    dy: &[f32],
    (planes, h, w): (usize, usize, usize),
    add: bool,
    dx: &mut [f32],
) {
    let (ho, wo) = (h / 2, w / 2);
    assert_eq!(x.len(), planes * h * w, "pool2x2: input size");
    assert_eq!(dy.len(), planes * ho * wo, "pool2x2: gradient size");
    assert_eq!(dx.len(), planes * h * w, "pool2x2: output size");
    if ho == 0 || wo == 0 {
        if !add {
            dx.fill(0.0);
        }
        return;
    }
    dx.par_chunks_mut(h * w)
        .with_min_len(planes_per_task(h * w))
        .zip(x.par_chunks(h * w))
        .zip(dy.par_chunks(ho * wo))
        .for_each(|((dxp, xp), gp)| {
            if add {
                pool2x2_backward_add_plane_wide(xp, gp, (h, w), dxp);
            } else {
                pool2x2_backward_plane_wide(xp, gp, (h, w), dxp);
            }
        });
}

/// [`pool2x2_backward_into`] of one plane.
#[inline(always)]
pub(crate) fn pool2x2_backward_plane(xp: &[f32], gp: &[f32], hw: (usize, usize), dxp: &mut [f32]) {
    pool2x2_backward_plane_as::<false>(xp, gp, hw, dxp);
}

/// [`pool2x2_backward_add_into`] of one plane.
#[inline(always)]
pub(crate) fn pool2x2_backward_add_plane(
    xp: &[f32],
    gp: &[f32],
    hw: (usize, usize),
    dxp: &mut [f32],
) {
    pool2x2_backward_plane_as::<true>(xp, gp, hw, dxp);
}

/// The gradient of one plane's pooling, written (`ADD` false) or added (true) to `dxp`.
#[inline(always)]
fn pool2x2_backward_plane_as<const ADD: bool>(
    xp: &[f32],
    gp: &[f32],
    (h, w): (usize, usize),
    dxp: &mut [f32],
) {
    let (ho, wo) = (h / 2, w / 2);
    // A dropped odd last row.
    if !ADD {
        dxp[2 * ho * w..].fill(0.0);
    }
    for (i, grow) in gp.chunks_exact(wo).enumerate() {
        let (d0, d1) = dxp[2 * i * w..(2 * i + 2) * w].split_at_mut(w);
        let r0 = &xp[2 * i * w..2 * i * w + 2 * wo];
        let r1 = &xp[(2 * i + 1) * w..(2 * i + 1) * w + 2 * wo];
        let (d0p, _) = d0.as_chunks_mut::<2>();
        let (d1p, _) = d1.as_chunks_mut::<2>();
        let (r0p, _) = r0.as_chunks::<2>();
        let (r1p, _) = r1.as_chunks::<2>();
        for ((((&g, top), bottom), o0), o1) in grow.iter().zip(r0p).zip(r1p).zip(d0p).zip(d1p) {
            let ([a, b], [c, d]) = (*top, *bottom);
            let m = a.max(b).max(c.max(d));
            // The first maximum, without branches (the loop vectorises).
            let sa = a == m;
            let sb = !sa && b == m;
            let sc = !sa && !sb && c == m;
            let sd = !sa && !sb && !sc;
            let pick = |s: bool| f32::from_bits(g.to_bits() & u32::from(s).wrapping_neg());
            if ADD {
                *o0 = [o0[0] + pick(sa), o0[1] + pick(sb)];
                *o1 = [o1[0] + pick(sc), o1[1] + pick(sd)];
            } else {
                *o0 = [pick(sa), pick(sb)];
                *o1 = [pick(sc), pick(sd)];
            }
        }
        // A dropped odd last column.
        if !ADD {
            d0[2 * wo..].fill(0.0);
            d1[2 * wo..].fill(0.0);
        }
    }
}

wide!(pool2x2_backward_plane_wide = pool2x2_backward_plane(
    xp: &[f32], gp: &[f32], hw: (usize, usize), dxp: &mut [f32]
));
wide!(pool2x2_backward_add_plane_wide = pool2x2_backward_add_plane(
    xp: &[f32], gp: &[f32], hw: (usize, usize), dxp: &mut [f32]
));
wide!(pool2x2_forward_plane_wide = pool2x2_forward_plane(
    xp: &[f32], hw: (usize, usize), yp: &mut [f32]
));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_by_hand() {
        // One 3 x 5 plane: two windows (the last row and column are dropped); the left window
        // has a tie between its top-right and bottom-left values.
        let x = [
            1.0, 4.0, -2.0, -1.0, 9.0, //
            4.0, 0.0, -3.0, -5.0, 9.0, //
            8.0, 8.0, 8.0, 8.0, 9.0,
        ];
        assert_eq!(pool2x2_forward(&x, 1, 3, 5), vec![4.0, -1.0]);
        // Every input gets its gradient written, also the dropped row and column.
        let mut dx = vec![f32::NAN; 15];
        pool2x2_backward_into(&x, &[10.0, 20.0], 1, 3, 5, &mut dx);
        let expected = [
            0.0, 10.0, 0.0, 20.0, 0.0, //
            0.0, 0.0, 0.0, 0.0, 0.0, //
            0.0, 0.0, 0.0, 0.0, 0.0,
        ];
        assert_eq!(dx, expected);
        // Added to another gradient: the dropped row and column keep theirs.
        let mut acc: Vec<f32> = (0..15).map(|i| i as f32).collect();
        pool2x2_backward_add_into(&x, &[10.0, 20.0], 1, 3, 5, &mut acc);
        let added: Vec<f32> = expected
            .iter()
            .enumerate()
            .map(|(i, e)| e + i as f32)
            .collect();
        assert_eq!(acc, added);
        // Two planes are pooled independently; a map smaller than a window gives nothing.
        let two = pool2x2_forward(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], 2, 2, 2);
        assert_eq!(two, vec![4.0, 8.0]);
        assert!(pool2x2_forward(&[1.0, 2.0], 2, 1, 1).is_empty());
    }
}
