//! The labels painted on a stack, one plane per slice, kept only for slices that have been
//! painted: a stack of thousands of slices (or one read from disk on demand, larger than
//! memory) costs one shared empty plane until its slices are labelled.

use std::ops::Index;

use crate::data::plane::Plane;

/// Class ids per slice (0 = unlabelled); slices never painted share one empty plane.
#[derive(Clone, Debug)]
pub struct SliceLabels {
    planes: Vec<Option<Plane<u8>>>,
    empty: Plane<u8>,
}

impl SliceLabels {
    /// No labels on `slices` slices of `width x height`.
    pub fn new(width: usize, height: usize, slices: usize) -> Self {
        Self {
            planes: vec![None; slices],
            empty: Plane::filled(width, height, 0),
        }
    }

    /// The labels `planes` (one per slice, each `width x height`); planes without a label
    /// are not kept.
    pub fn from_planes(width: usize, height: usize, planes: Vec<Plane<u8>>) -> Self {
        let mut out = Self::new(width, height, planes.len());
        for (s, p) in planes.into_iter().enumerate() {
            out.set(s, p);
        }
        out
    }

    /// Sets slice `s` to `plane` (kept only when it has a label and the slice's size).
    pub fn set(&mut self, s: usize, plane: Plane<u8>) {
        if let Some(slot) = self.planes.get_mut(s) {
            let fits = (plane.width, plane.height) == (self.empty.width, self.empty.height);
            *slot = (fits && plane.data.iter().any(|&v| v != 0)).then_some(plane);
        }
    }

    /// Number of slices.
    pub fn len(&self) -> usize {
        self.planes.len()
    }

    /// Whether the stack has no slices.
    pub fn is_empty(&self) -> bool {
        self.planes.is_empty()
    }

    /// Slice `s`'s labels (the empty plane when never painted), `None` past the last slice.
    pub fn get(&self, s: usize) -> Option<&Plane<u8>> {
        self.planes
            .get(s)
            .map(|p| p.as_ref().unwrap_or(&self.empty))
    }

    /// Slice `s`'s labels for changing them (kept from now on), `None` past the last slice.
    pub fn get_mut(&mut self, s: usize) -> Option<&mut Plane<u8>> {
        let empty = &self.empty;
        self.planes
            .get_mut(s)
            .map(|p| p.get_or_insert_with(|| empty.clone()))
    }

    /// Every slice's labels, in order (the empty plane for slices never painted).
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &Plane<u8>> {
        self.planes
            .iter()
            .map(|p| p.as_ref().unwrap_or(&self.empty))
    }

    /// The slices that have been painted, with their labels (possibly erased since).
    pub fn painted(&self) -> impl Iterator<Item = (usize, &Plane<u8>)> {
        self.planes
            .iter()
            .enumerate()
            .filter_map(|(s, p)| p.as_ref().map(|p| (s, p)))
    }

    /// Pixels of every slice (for sizes of files and journals).
    pub fn pixels(&self) -> u64 {
        self.empty.data.len() as u64 * self.planes.len() as u64
    }
}

/// Equal when every slice has the same labels (a painted slice erased again equals one never
/// painted).
impl PartialEq for SliceLabels {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Index<usize> for SliceLabels {
    type Output = Plane<u8>;

    /// Slice `s`'s labels; panics past the last slice, as a `Vec` does.
    fn index(&self, s: usize) -> &Plane<u8> {
        self.planes[s].as_ref().unwrap_or(&self.empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_painted_slices_are_kept() {
        let mut l = SliceLabels::new(3, 2, 4);
        assert_eq!((l.len(), l.painted().count(), l.pixels()), (4, 0, 24));
        assert_eq!(l[2], Plane::filled(3, 2, 0));
        l.get_mut(2).unwrap().data[4] = 2;
        assert_eq!(l[2].at(1, 1), 2);
        assert_eq!(l.painted().map(|(s, _)| s).collect::<Vec<_>>(), [2]);
        assert!(l.get(4).is_none() && l.get_mut(4).is_none());
        // From planes: empty ones and ones of another size are not kept.
        let planes = vec![
            Plane::filled(3, 2, 0),
            Plane::filled(3, 2, 1),
            Plane::filled(2, 2, 1),
        ];
        let f = SliceLabels::from_planes(3, 2, planes);
        assert_eq!(f.painted().map(|(s, _)| s).collect::<Vec<_>>(), [1]);
        assert_eq!(f.iter().map(|p| p.data[0]).collect::<Vec<_>>(), [0, 1, 0]);
    }
}
