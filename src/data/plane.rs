//! A 2-D row-major plane of pixels ([`Plane`]), mirrored crops of it and pixel neighbourhoods.

/// A 2-D row-major plane of pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct Plane<T> {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `width * height` values, row after row.
    pub data: Vec<T>,
}

impl<T: Copy> Plane<T> {
    /// A plane filled with `value`.
    pub fn filled(width: usize, height: usize, value: T) -> Self {
        Self {
            width,
            height,
            data: vec![value; width * height],
        }
    }

    /// Wraps `data`; `None` when its length is not `width * height`.
    pub fn from_vec(width: usize, height: usize, data: Vec<T>) -> Option<Self> {
        (data.len() == width * height).then_some(Self {
            width,
            height,
            data,
        })
    }

    /// The value at column `x`, row `y`, or `None` outside the plane.
    pub fn get(&self, x: usize, y: usize) -> Option<T> {
        if x < self.width && y < self.height {
            self.data.get(y * self.width + x).copied()
        } else {
            None
        }
    }

    /// The value at `(x, y)`; the caller guarantees the coordinates are inside.
    #[inline]
    pub fn at(&self, x: usize, y: usize) -> T {
        self.data[y * self.width + x]
    }

    /// Sets the value at `(x, y)`; the caller guarantees the coordinates are inside.
    #[inline]
    pub fn set(&mut self, x: usize, y: usize, value: T) {
        self.data[y * self.width + x] = value;
    }

    /// Maps every value through `f`.
    pub fn map<U: Copy>(&self, f: impl Fn(T) -> U) -> Plane<U> {
        Plane {
            width: self.width,
            height: self.height,
            data: self.data.iter().map(|&v| f(v)).collect(),
        }
    }

    /// The `w`x`h` window whose top-left corner is `(x0, y0)`, with coordinates outside the
    /// plane mirrored back inside (see [`mirror_index`]).
    pub fn crop_mirrored(&self, x0: isize, y0: isize, w: usize, h: usize) -> Plane<T> {
        let mut data = Vec::with_capacity(w * h);
        for y in 0..h as isize {
            let sy = mirror_index(y0 + y, self.height);
            let row = &self.data[sy * self.width..(sy + 1) * self.width];
            for x in 0..w as isize {
                data.push(row[mirror_index(x0 + x, self.width)]);
            }
        }
        Plane {
            width: w,
            height: h,
            data,
        }
    }
}

/// Indices of the 4-neighbours of pixel `i` of a row-major `w x h` plane.
pub fn neighbours4(i: usize, w: usize, h: usize) -> impl Iterator<Item = usize> {
    let (x, y) = (i % w, i / w);
    [
        (x > 0).then(|| i - 1),
        (x + 1 < w).then(|| i + 1),
        (y > 0).then(|| i - w),
        (y + 1 < h).then(|| i + w),
    ]
    .into_iter()
    .flatten()
}

/// Folds any integer coordinate into `0..len` by mirroring at the borders without repeating
/// the edge pixel (`-1 -> 1`, `len -> len - 2`), the U-Net paper's border extrapolation.
/// Coordinates far outside are folded repeatedly, so windows larger than the image work too.
#[inline]
pub fn mirror_index(i: isize, len: usize) -> usize {
    if len <= 1 {
        return 0;
    }
    let n = len as isize;
    let period = 2 * (n - 1);
    let m = i.rem_euclid(period);
    (if m < n { m } else { period - m }) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_index_reflects_without_repeating_the_edge() {
        let got: Vec<usize> = (-4..9).map(|i| mirror_index(i, 4)).collect();
        assert_eq!(got, vec![2, 3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1, 2]);
        assert_eq!(mirror_index(-7, 1), 0);
    }

    #[test]
    fn crop_mirrored_matches_numpy_reflect_padding() {
        // numpy.pad([[1,2,3]], ((0,0),(2,2)), mode="reflect") == [[3,2,1,2,3,2,1]]
        let p = Plane::from_vec(3, 1, vec![1, 2, 3]).unwrap();
        let c = p.crop_mirrored(-2, 0, 7, 1);
        assert_eq!(c.data, vec![3, 2, 1, 2, 3, 2, 1]);
    }
}
