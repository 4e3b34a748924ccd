//! How a TIFF's pages map to channels, Z slices and time points, and its pixel size: read from
//! the ImageJ description (`images`, `channels`, `slices`, `frames`, `spacing`, `unit`, with the
//! resolution tags) or from OME-XML (`DimensionOrder`, `SizeC/Z/T`, `PhysicalSize*`). A
//! description whose counts disagree with the file's pages is an error naming the file; a file
//! without either description keeps one page per Z slice.

use std::path::Path;

use crate::data::error::DataError;

/// One of the axes of a stack's planes other than Y and X.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Axis {
    /// Channels.
    C,
    /// Z slices.
    Z,
    /// Time points.
    T,
}

/// The physical size of a pixel (and of a Z step), with its unit.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PixelSize {
    /// Width of a pixel.
    pub x: f64,
    /// Height of a pixel.
    pub y: f64,
    /// Distance between Z slices, when known.
    pub z: Option<f64>,
    /// The unit of all three (`µm`, `nm`, ...).
    pub unit: String,
}

/// How the pages of one file map to channels, Z and T.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    /// Channels per image.
    pub channels: usize,
    /// Z slices.
    pub z: usize,
    /// Time points.
    pub t: usize,
    /// Order of the pages, fastest-varying axis first.
    pub order: [Axis; 3],
    /// Pixel size, when the file says.
    pub pixel_size: Option<PixelSize>,
    /// Channel names, when the file says (OME); empty otherwise.
    pub channel_names: Vec<String>,
}

impl Layout {
    /// One page per Z slice, one channel: a file without a description.
    pub fn plain(pages: usize) -> Self {
        Self {
            channels: 1,
            z: pages,
            t: 1,
            order: [Axis::C, Axis::Z, Axis::T],
            pixel_size: None,
            channel_names: Vec::new(),
        }
    }

    /// Pages the layout needs.
    pub fn pages(&self) -> usize {
        self.channels * self.z * self.t
    }

    /// The position `(t, z, c)` of page `page`.
    pub fn position(&self, page: usize) -> (usize, usize, usize) {
        let mut rest = page;
        let (mut t, mut z, mut c) = (0, 0, 0);
        for axis in self.order {
            let n = self.size(axis);
            let i = rest % n;
            rest /= n;
            match axis {
                Axis::C => c = i,
                Axis::Z => z = i,
                Axis::T => t = i,
            }
        }
        (t, z, c)
    }

    /// The page of channel `c` of Z slice `z` at time point `t` (the inverse of
    /// [`Self::position`]).
    pub fn page_of(&self, t: usize, z: usize, c: usize) -> usize {
        let (mut page, mut stride) = (0, 1);
        for axis in self.order {
            let i = match axis {
                Axis::C => c,
                Axis::Z => z,
                Axis::T => t,
            };
            page += i * stride;
            stride *= self.size(axis);
        }
        page
    }

    /// Where page `page` goes in unet-studio's order (time, then Z, then channel fastest).
    pub fn plane_index(&self, page: usize) -> usize {
        let (t, z, c) = self.position(page);
        (t * self.z + z) * self.channels + c
    }

    fn size(&self, axis: Axis) -> usize {
        match axis {
            Axis::C => self.channels,
            Axis::Z => self.z,
            Axis::T => self.t,
        }
    }
}

/// The layout a TIFF's first-page description gives (`None`: no ImageJ or OME description),
/// checked against its `pages`. `resolution` is the pixels per unit in X and Y from the
/// resolution tags, used with ImageJ's `unit`.
pub fn layout_of(
    path: &Path,
    description: &str,
    pages: usize,
    resolution: Option<(f64, f64)>,
) -> Result<Option<Layout>, DataError> {
    let layout = if description.starts_with("ImageJ=") {
        imagej(path, description, resolution)?
    } else if description.trim_start().starts_with("<?xml") || description.contains("<OME") {
        ome(path, description)?
    } else {
        return Ok(None);
    };
    let Some(layout) = layout else {
        return Ok(None);
    };
    if layout.pages() != pages {
        return Err(DataError::invalid(
            path,
            format!(
                "its description says {} channel(s) x {} slice(s) x {} frame(s) = {} pages, but the file has {pages}",
                layout.channels,
                layout.z,
                layout.t,
                layout.pages()
            ),
        ));
    }
    Ok(Some(layout))
}

/// ImageJ's description: `key=value` lines; pages in C, Z, T order (channel fastest).
fn imagej(
    path: &Path,
    description: &str,
    resolution: Option<(f64, f64)>,
) -> Result<Option<Layout>, DataError> {
    let value = |key: &str| {
        description
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::trim)
    };
    let count = |key: &str| -> Result<Option<usize>, DataError> {
        match value(key) {
            None => Ok(None),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(Some(n)),
                _ => Err(DataError::invalid(
                    path,
                    format!("its ImageJ description has {key}={v}, not a count"),
                )),
            },
        }
    };
    let images = count("images")?;
    let channels = count("channels")?.unwrap_or(1);
    let frames = count("frames")?.unwrap_or(1);
    // A plain ImageJ stack may give only `images`: its pages are Z slices.
    let slices = match count("slices")? {
        Some(s) => s,
        None => images.map_or(1, |n| n / (channels * frames).max(1)).max(1),
    };
    if let Some(n) = images
        && n != channels * slices * frames
    {
        return Err(DataError::invalid(
            path,
            format!(
                "its ImageJ description says images={n} but channels={channels} x slices={slices} x frames={frames} = {}",
                channels * slices * frames
            ),
        ));
    }
    let unit = value("unit").map(|u| match u {
        "micron" | "um" | "\\u00B5m" => "µm".to_string(),
        other => other.to_string(),
    });
    let pixel_size = match (resolution, unit) {
        (Some((rx, ry)), Some(unit)) if rx > 0.0 && ry > 0.0 => Some(PixelSize {
            x: 1.0 / rx,
            y: 1.0 / ry,
            z: value("spacing")
                .and_then(|s| s.parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s > 0.0),
            unit,
        }),
        _ => None,
    };
    Ok(Some(Layout {
        channels,
        z: slices,
        t: frames,
        order: [Axis::C, Axis::Z, Axis::T],
        pixel_size,
        channel_names: Vec::new(),
    }))
}

/// OME-XML: the first image's `Pixels` element.
fn ome(path: &Path, description: &str) -> Result<Option<Layout>, DataError> {
    use quick_xml::events::Event;
    let bad = |what: String| DataError::invalid(path, format!("its OME-XML {what}"));
    let mut reader = quick_xml::Reader::from_str(description);
    let mut images = 0usize;
    let mut pixels = None;
    let mut names = Vec::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(e) | Event::Empty(e)) => match e.local_name().as_ref() {
                b"Image" => images += 1,
                b"Pixels" if pixels.is_none() => {
                    let mut attrs = Vec::new();
                    for a in e.attributes() {
                        let a = a.map_err(|e| bad(format!("cannot be read: {e}")))?;
                        let key = String::from_utf8_lossy(a.key.local_name().as_ref()).into_owned();
                        let value = String::from_utf8_lossy(&a.value).into_owned();
                        attrs.push((key, value));
                    }
                    pixels = Some(attrs);
                }
                // The first image's channels, in order (their names, or nothing).
                b"Channel" if images <= 1 => names.push(
                    e.attributes()
                        .flatten()
                        .find(|a| a.key.local_name().as_ref() == b"Name")
                        .map(|a| String::from_utf8_lossy(&a.value).into_owned())
                        .unwrap_or_default(),
                ),
                _ => {}
            },
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => return Err(bad(format!("cannot be read: {e}"))),
        }
    }
    let Some(attrs) = pixels else {
        return Ok(None);
    };
    if images > 1 {
        return Err(bad(format!(
            "describes {images} images (series); unet-studio reads files with one"
        )));
    }
    let get = |k: &str| attrs.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str());
    let size = |k: &str| -> Result<usize, DataError> {
        match get(k) {
            None => Ok(1),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| bad(format!("has {k}=\"{v}\", not a count"))),
        }
    };
    let (channels, z, t) = (size("SizeC")?, size("SizeZ")?, size("SizeT")?);
    let dims = get("DimensionOrder").unwrap_or("XYZCT");
    let axes: Vec<Axis> = dims
        .chars()
        .filter_map(|c| match c {
            'C' => Some(Axis::C),
            'Z' => Some(Axis::Z),
            'T' => Some(Axis::T),
            _ => None,
        })
        .collect();
    let order: [Axis; 3] = match axes.as_slice() {
        [a, b, c] if a != b && b != c && a != c && dims.starts_with("XY") => [*a, *b, *c],
        _ => return Err(bad(format!("has DimensionOrder=\"{dims}\""))),
    };
    let length = |k: &str| {
        get(k)
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| *v > 0.0)
    };
    let pixel_size = match (length("PhysicalSizeX"), length("PhysicalSizeY")) {
        (Some(x), Some(y)) => Some(PixelSize {
            x,
            y,
            z: length("PhysicalSizeZ"),
            unit: get("PhysicalSizeXUnit").unwrap_or("µm").to_string(),
        }),
        _ => None,
    };
    // Names only when every channel has its element (else they could be misattributed).
    let channel_names = if names.len() == channels {
        names
    } else {
        Vec::new()
    };
    Ok(Some(Layout {
        channels,
        z,
        t,
        order,
        pixel_size,
        channel_names,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("s.tif")
    }

    #[test]
    fn imagej_hyperstacks_put_the_channel_fastest() {
        let d = "ImageJ=1.54f\nimages=12\nchannels=2\nslices=3\nframes=2\nhyperstack=true\nspacing=0.5\nunit=micron\n";
        let l = layout_of(p(), d, 12, Some((5.0, 4.0))).unwrap().unwrap();
        assert_eq!((l.channels, l.z, l.t), (2, 3, 2));
        // Page 7 = c 1, z 0, t 1 (7 = 1 + 2 * (0 + 3 * 1)).
        assert_eq!(l.position(7), (1, 0, 1));
        assert_eq!(l.plane_index(7), 7, "ImageJ's order is ours");
        let s = l.pixel_size.unwrap();
        assert_eq!(
            (s.x, s.y, s.z, s.unit.as_str()),
            (0.2, 0.25, Some(0.5), "µm")
        );
        // A plain ImageJ stack: pages are slices; no unit, no pixel size.
        let l = layout_of(p(), "ImageJ=1.54f\nimages=5\n", 5, Some((1.0, 1.0)))
            .unwrap()
            .unwrap();
        assert_eq!((l.channels, l.z, l.t, l.pixel_size), (1, 5, 1, None));
    }

    #[test]
    fn ome_dimension_orders_map_pages_to_their_place() {
        let d = r#"<?xml version="1.0"?><OME><Image ID="Image:0"><Pixels DimensionOrder="XYZCT" SizeX="4" SizeY="3" SizeC="2" SizeZ="3" SizeT="1" PhysicalSizeX="0.1" PhysicalSizeY="0.1" PhysicalSizeXUnit="nm"/></Image></OME>"#;
        let l = layout_of(p(), d, 6, None).unwrap().unwrap();
        assert_eq!((l.channels, l.z, l.t), (2, 3, 1));
        // XYZCT: Z fastest. Page 4 = z 1, c 1 -> our plane (z 1) * 2 + c 1 = 3.
        assert_eq!(l.position(4), (0, 1, 1));
        assert_eq!(l.plane_index(4), 3);
        assert_eq!(l.pixel_size.as_ref().map(|p| p.unit.as_str()), Some("nm"));
        let every: Vec<usize> = (0..6).map(|i| l.plane_index(i)).collect();
        assert_eq!(every, [0, 2, 4, 1, 3, 5]);
    }

    #[test]
    fn descriptions_that_disagree_with_the_file_are_refused() {
        let e = layout_of(
            p(),
            "ImageJ=1.54f\nimages=6\nchannels=2\nslices=3\n",
            5,
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("s.tif: ") && e.contains("= 6 pages, but the file has 5"),
            "{e}"
        );
        let e = layout_of(
            p(),
            "ImageJ=1.54f\nimages=7\nchannels=2\nslices=3\n",
            7,
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("images=7 but channels=2 x slices=3"), "{e}");
        let e = layout_of(p(), "ImageJ=1\nchannels=x\n", 1, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("channels=x, not a count"), "{e}");
        let two =
            r#"<OME><Image><Pixels SizeZ="1"/></Image><Image><Pixels SizeZ="1"/></Image></OME>"#;
        let e = layout_of(p(), two, 2, None).unwrap_err().to_string();
        assert!(e.contains("2 images (series)"), "{e}");
        let odd = r#"<OME><Image><Pixels DimensionOrder="XYZZT"/></Image></OME>"#;
        let e = layout_of(p(), odd, 1, None).unwrap_err().to_string();
        assert!(e.contains("DimensionOrder"), "{e}");
        // Any other description: not ours to read.
        assert_eq!(layout_of(p(), "made by a scope", 3, None).unwrap(), None);
    }
}
