//! Append-only autosave journal of label blocks.
//!
//! Rewriting a whole label stack after every stroke costs time proportional to the stack, not
//! to the stroke. Instead every stroke appends the label blocks it changed (64 x 64 pixels
//! each, absolute values) as one record to `<labels>.journal` and syncs it to disk. Opening
//! the stack replays the records over the label file; compaction writes the full label file
//! atomically and removes the journal.
//!
//! A record is `magic, payload length, FNV-1a 64 hash of the payload, payload`. A process
//! killed while appending leaves a torn last record: its length or hash does not match and
//! replay stops before it, so after a crash every stroke but at most the last one is restored.
//! Records hold absolute block contents, so replaying a journal twice gives the same labels.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::data::error::DataError;
use crate::data::painted::SliceLabels;
use crate::data::plane::Plane;

/// Edge of a journal block in pixels.
pub const BLOCK: usize = 64;

const FILE_MAGIC: &[u8; 8] = b"UNETJRN1";
const RECORD_MAGIC: u32 = 0x4345_524a; // "JREC"
const HEADER_LEN: usize = 8 + 3 * 4;
/// Largest record accepted on replay (a full 65535 x 65535 slice plus headers).
const MAX_RECORD: u64 = 1 << 33;

/// The contents of one block of one slice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// Slice index.
    pub slice: usize,
    /// Left column.
    pub x0: usize,
    /// Top row.
    pub y0: usize,
    /// Width (up to [`BLOCK`], less at the right edge).
    pub width: usize,
    /// Height (up to [`BLOCK`], less at the bottom edge).
    pub height: usize,
    /// `width * height` labels, row after row.
    pub data: Vec<u8>,
}

impl Block {
    /// Copies block `(bx, by)` of `plane` (block coordinates in units of [`BLOCK`]).
    pub fn copy_from(plane: &Plane<u8>, slice: usize, bx: usize, by: usize) -> Self {
        let (x0, y0) = (bx * BLOCK, by * BLOCK);
        let width = BLOCK.min(plane.width.saturating_sub(x0));
        let height = BLOCK.min(plane.height.saturating_sub(y0));
        let mut data = Vec::with_capacity(width * height);
        for y in y0..y0 + height {
            let row = y * plane.width;
            data.extend_from_slice(&plane.data[row + x0..row + x0 + width]);
        }
        Self {
            slice,
            x0,
            y0,
            width,
            height,
            data,
        }
    }

    /// Writes the block into `planes`; `false` when it does not fit them.
    fn apply(&self, planes: &mut SliceLabels) -> bool {
        let Some(plane) = planes.get(self.slice) else {
            return false;
        };
        if self.x0 + self.width > plane.width
            || self.y0 + self.height > plane.height
            || self.data.len() != self.width * self.height
        {
            return false;
        }
        let Some(plane) = planes.get_mut(self.slice) else {
            return false;
        };
        for (r, y) in (self.y0..self.y0 + self.height).enumerate() {
            let row = y * plane.width;
            plane.data[row + self.x0..row + self.x0 + self.width]
                .copy_from_slice(&self.data[r * self.width..(r + 1) * self.width]);
        }
        true
    }
}

/// The journal file of a label file: `<labels>.journal`.
pub fn journal_path(label_path: &Path) -> PathBuf {
    let mut name = label_path.as_os_str().to_owned();
    name.push(".journal");
    PathBuf::from(name)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn header(width: usize, height: usize, slices: usize) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN);
    h.extend_from_slice(FILE_MAGIC);
    for v in [width, height, slices] {
        h.extend_from_slice(&(v as u32).to_le_bytes());
    }
    h
}

/// Encodes `blocks` as one record.
fn encode_record(blocks: &[Block]) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&(blocks.len() as u32).to_le_bytes());
    for b in blocks {
        for v in [b.slice, b.x0, b.y0, b.width, b.height] {
            payload.extend_from_slice(&(v as u32).to_le_bytes());
        }
        payload.extend_from_slice(&b.data);
    }
    let mut rec = Vec::with_capacity(payload.len() + 16);
    rec.extend_from_slice(&RECORD_MAGIC.to_le_bytes());
    rec.extend_from_slice(&(payload.len() as u64).to_le_bytes()[..4]);
    rec.extend_from_slice(&fnv1a(&payload).to_le_bytes());
    rec.extend_from_slice(&payload);
    rec
}

fn decode_payload(payload: &[u8]) -> Option<Vec<Block>> {
    let mut at = 0usize;
    let u32_at = |at: &mut usize| -> Option<usize> {
        let b = payload.get(*at..*at + 4)?;
        *at += 4;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let n = u32_at(&mut at)?;
    let mut blocks = Vec::new();
    for _ in 0..n {
        let slice = u32_at(&mut at)?;
        let x0 = u32_at(&mut at)?;
        let y0 = u32_at(&mut at)?;
        let width = u32_at(&mut at)?;
        let height = u32_at(&mut at)?;
        let len = width.checked_mul(height)?;
        let data = payload.get(at..at.checked_add(len)?)?.to_vec();
        at += len;
        blocks.push(Block {
            slice,
            x0,
            y0,
            width,
            height,
            data,
        });
    }
    (at == payload.len()).then_some(blocks)
}

/// Appends one record with `blocks` to the journal of `label_path` (creating it for a stack
/// of `slices` planes of `width x height`) and syncs it to disk. Returns the journal's size.
pub fn append(
    label_path: &Path,
    (width, height, slices): (usize, usize, usize),
    blocks: &[Block],
) -> Result<u64, DataError> {
    let path = journal_path(label_path);
    let io = |e| DataError::io(&path, e);
    // The first autosave of a stack whose work is kept in the data folder creates its folder.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(io)?;
    }
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io)?;
    if f.metadata().map_err(io)?.len() == 0 {
        f.write_all(&header(width, height, slices)).map_err(io)?;
    }
    f.write_all(&encode_record(blocks)).map_err(io)?;
    f.sync_data().map_err(io)?;
    Ok(f.metadata().map_err(io)?.len())
}

/// What [`replay`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replay {
    /// Complete records applied.
    pub records: usize,
    /// Bytes after the last complete record (a torn write of a killed process), ignored.
    pub ignored_bytes: u64,
}

/// Applies the journal of `label_path`, if there is one, to `planes`.
///
/// A journal written for a stack of another size is an error naming it; a torn or corrupt tail
/// is ignored (reported in [`Replay::ignored_bytes`]).
pub fn replay(label_path: &Path, planes: &mut SliceLabels) -> Result<Replay, DataError> {
    let path = journal_path(label_path);
    let mut bytes = Vec::new();
    match File::open(&path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes)
                .map_err(|e| DataError::io(&path, e))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Replay::default()),
        Err(e) => return Err(DataError::io(&path, e)),
    }
    if bytes.is_empty() {
        return Ok(Replay::default());
    }
    let (w, h) = planes.get(0).map_or((0, 0), |p| (p.width, p.height));
    if bytes.len() < HEADER_LEN || &bytes[..8] != FILE_MAGIC {
        return Err(DataError::invalid(
            &path,
            "not an unet-studio label journal",
        ));
    }
    if bytes[..HEADER_LEN] != header(w, h, planes.len())[..] {
        return Err(DataError::invalid(
            &path,
            format!(
                "the journal was written for a stack of another size (now {} slices of {w}x{h}); \
                 move it away to open the labels without it",
                planes.len()
            ),
        ));
    }
    let mut at = HEADER_LEN;
    let mut out = Replay::default();
    while at < bytes.len() {
        let Some(head) = bytes.get(at..at + 16) else {
            break;
        };
        let magic = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let len = u64::from(u32::from_le_bytes([head[4], head[5], head[6], head[7]]));
        let mut hash = [0u8; 8];
        hash.copy_from_slice(&head[8..16]);
        if magic != RECORD_MAGIC || len > MAX_RECORD {
            break;
        }
        let start = at + 16;
        let Some(payload) = bytes.get(start..start + len as usize) else {
            break;
        };
        if fnv1a(payload) != u64::from_le_bytes(hash) {
            break;
        }
        let Some(blocks) = decode_payload(payload) else {
            break;
        };
        if !blocks.iter().all(|b| b.apply(planes)) {
            return Err(DataError::invalid(
                &path,
                format!("record {} lies outside the stack", out.records + 1),
            ));
        }
        out.records += 1;
        at = start + len as usize;
    }
    out.ignored_bytes = (bytes.len() - at) as u64;
    Ok(out)
}

/// Removes the journal of `label_path` (after the full label file was written).
pub fn remove(label_path: &Path) -> Result<(), DataError> {
    let path = journal_path(label_path);
    match fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(DataError::io(&path, e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("unet-journal-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d.join("labels.tif")
    }

    fn planes(w: usize, h: usize, n: usize) -> SliceLabels {
        SliceLabels::new(w, h, n)
    }

    #[test]
    fn blocks_round_trip_through_the_journal() {
        let label = tmp("roundtrip");
        // 100 x 70: edge blocks are 36 wide and 6 high.
        let mut a = planes(100, 70, 2);
        for (i, v) in a.get_mut(1).unwrap().data.iter_mut().enumerate() {
            *v = (i % 7) as u8;
        }
        let blocks: Vec<Block> = [(0, 0), (1, 0), (0, 1), (1, 1)]
            .iter()
            .map(|&(bx, by)| Block::copy_from(&a[1], 1, bx, by))
            .collect();
        assert_eq!((blocks[3].width, blocks[3].height), (36, 6));
        append(&label, (100, 70, 2), &blocks[..2]).unwrap();
        let size = append(&label, (100, 70, 2), &blocks[2..]).unwrap();
        assert_eq!(size, fs::metadata(journal_path(&label)).unwrap().len());
        let mut b = planes(100, 70, 2);
        let r = replay(&label, &mut b).unwrap();
        assert_eq!(
            r,
            Replay {
                records: 2,
                ignored_bytes: 0
            }
        );
        assert_eq!(a, b);
        // Replaying again changes nothing (absolute contents).
        replay(&label, &mut b).unwrap();
        assert_eq!(a, b);
        remove(&label).unwrap();
        assert!(!journal_path(&label).exists());
        remove(&label).unwrap();
    }

    /// The first autosave into a folder not made yet (a stack's work kept in the data folder)
    /// makes it.
    #[test]
    fn the_first_autosave_makes_its_folder() {
        let label = tmp("folder").with_file_name("not-yet").join("labels.tif");
        let mut a = planes(64, 64, 1);
        a.get_mut(0).unwrap().data[3] = 2;
        append(&label, (64, 64, 1), &[Block::copy_from(&a[0], 0, 0, 0)]).unwrap();
        let mut b = planes(64, 64, 1);
        assert_eq!(replay(&label, &mut b).unwrap().records, 1);
        assert_eq!(a, b);
    }

    #[test]
    fn a_torn_tail_loses_only_the_last_record() {
        let label = tmp("torn");
        let mut a = planes(64, 64, 1);
        a.get_mut(0).unwrap().data[5] = 1;
        let second_start =
            append(&label, (64, 64, 1), &[Block::copy_from(&a[0], 0, 0, 0)]).unwrap() as usize;
        let first = a.clone();
        a.get_mut(0).unwrap().data[9] = 2;
        let full = append(&label, (64, 64, 1), &[Block::copy_from(&a[0], 0, 0, 0)]).unwrap();
        let path = journal_path(&label);
        let bytes = fs::read(&path).unwrap();
        assert_eq!(full as usize, 2 * second_start - HEADER_LEN);
        // Every truncation point inside the second record restores exactly the first stroke.
        for cut in [second_start + 1, second_start + 16, full as usize - 1] {
            fs::write(&path, &bytes[..cut]).unwrap();
            let mut b = planes(64, 64, 1);
            let r = replay(&label, &mut b).unwrap();
            assert_eq!(r.records, 1, "cut at {cut}");
            assert_eq!(r.ignored_bytes as usize, cut - second_start);
            assert_eq!(b, first);
        }
        // A flipped bit in the last record's payload is detected by its hash.
        let mut bad = bytes.clone();
        let n = bad.len();
        bad[n - 10] ^= 1;
        fs::write(&path, &bad).unwrap();
        let mut b = planes(64, 64, 1);
        assert_eq!(replay(&label, &mut b).unwrap().records, 1);
        assert_eq!(b, first);
    }

    #[test]
    fn a_journal_of_another_stack_is_an_error_naming_it() {
        let label = tmp("other");
        let a = planes(64, 64, 1);
        append(&label, (64, 64, 1), &[Block::copy_from(&a[0], 0, 0, 0)]).unwrap();
        let mut b = planes(65, 64, 1);
        let e = replay(&label, &mut b).unwrap_err().to_string();
        assert!(
            e.contains("labels.tif.journal") && e.contains("another size"),
            "{e}"
        );
        fs::write(journal_path(&label), b"garbage!garbage!garbage!").unwrap();
        let e = replay(&label, &mut b).unwrap_err().to_string();
        assert!(e.contains("not an unet-studio label journal"), "{e}");
    }
}
