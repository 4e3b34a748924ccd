//! What a project remembers besides its labels: class names and colours, the display's
//! contrast window (saved as `labels.unet.json`).

use crate::data::{DataError, Plane, Stack};
use crate::preprocess::normalize::percentile;

/// A label class: its id is its index + 1 (0 = unlabelled).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClassInfo {
    /// Display name.
    pub name: String,
    /// Overlay colour.
    pub color: [u8; 3],
}

/// Default names and colours of the first classes.
pub fn default_classes() -> Vec<ClassInfo> {
    vec![
        ClassInfo {
            name: "background".into(),
            color: [230, 60, 60],
        },
        ClassInfo {
            name: "foreground".into(),
            color: [60, 200, 90],
        },
    ]
}

/// A palette colour for class ids beyond the named ones.
pub fn class_color(id: usize) -> [u8; 3] {
    const P: [[u8; 3]; 8] = [
        [230, 60, 60],
        [60, 200, 90],
        [70, 130, 240],
        [240, 200, 40],
        [200, 80, 220],
        [40, 210, 210],
        [250, 140, 40],
        [150, 150, 150],
    ];
    P[(id.max(1) - 1) % P.len()]
}

/// Contrast window and gamma of a stack, and how each channel of a multichannel stack is
/// shown.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Display {
    /// Raw value shown black (a grey stack's window).
    pub min: f32,
    /// Raw value shown white.
    pub max: f32,
    /// Gamma applied after windowing.
    pub gamma: f32,
    /// Each channel's window, colour and visibility (empty for a grey stack): the composite
    /// adds the shown channels in their colours, as Fiji's composite mode does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<ChannelDisplay>,
}

/// How one channel of a multichannel stack is shown.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChannelDisplay {
    /// Raw value shown black.
    pub min: f32,
    /// Raw value shown at full colour.
    pub max: f32,
    /// Its colour (sRGB).
    pub color: [u8; 3],
    /// Whether it is shown.
    pub visible: bool,
}

/// Fiji's default colours of the channels of a composite: red, green, blue, grey, cyan,
/// magenta, yellow.
pub fn channel_colour(c: usize) -> [u8; 3] {
    const FIJI: [[u8; 3]; 7] = [
        [255, 0, 0],
        [0, 255, 0],
        [0, 0, 255],
        [255, 255, 255],
        [0, 255, 255],
        [255, 0, 255],
        [255, 255, 0],
    ];
    FIJI[c % FIJI.len()]
}

impl Display {
    /// The automatic display of `stack`: the 0.5-99.5 % window of the first slice, per
    /// channel; 8-bit colour and multichannel images show their full range 0-255 as Fiji does
    /// (an RGB photograph keeps its colours).
    pub fn auto(stack: &Stack) -> Result<Self, DataError> {
        let first = stack.image(0)?;
        let (min, max) = auto_window(&first, 0);
        let full_range = stack.kind == crate::data::stack::PixelKind::U8;
        let channels = if stack.channels > 1 {
            (0..stack.channels)
                .map(|c| {
                    let (min, max) = if full_range {
                        (0.0, 255.0)
                    } else {
                        auto_window(&first, c)
                    };
                    ChannelDisplay {
                        min,
                        max,
                        color: channel_colour(c),
                        visible: true,
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(Self {
            min,
            max,
            gamma: 1.0,
            channels,
        })
    }

    /// Whether this display fits a stack of `channels` channels.
    pub fn fits(&self, channels: usize) -> bool {
        if channels > 1 {
            self.channels.len() == channels
        } else {
            self.channels.is_empty()
        }
    }
}

/// What is kept about a stack besides its labels: class names and colours, contrast.
/// Saved as `<labels file>.json` and restored when the stack is opened again.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProjectSettings {
    /// Classes (class k at index k - 1).
    pub classes: Vec<ClassInfo>,
    /// Contrast window and gamma.
    pub display: Display,
}

/// The 0.5 % and 99.5 % percentiles of channel `channel` of a slice's planes: the automatic
/// contrast window.
pub fn auto_window(planes: &[Plane<f32>], channel: usize) -> (f32, f32) {
    let Some(plane) = planes.get(channel.min(planes.len().saturating_sub(1))) else {
        return (0.0, 1.0);
    };
    let data = &plane.data;
    let lo = percentile(data, 0.5);
    let hi = percentile(data, 99.5);
    if hi > lo { (lo, hi) } else { (lo, lo + 1.0) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::plane::Plane;
    use crate::data::stack::PixelKind;

    fn stack(kind: PixelKind, channels: usize) -> Stack {
        let ramp = |c: usize| Plane {
            width: 200,
            height: 1,
            data: (0..200).map(|i| (i + 10 * c) as f32).collect(),
        };
        Stack {
            channels,
            ..Stack::grey((0..channels).map(ramp).collect(), kind, Vec::new())
        }
    }

    #[test]
    fn colour_shows_its_full_range_and_other_channels_their_percentiles() {
        let rgb = Display::auto(&stack(PixelKind::U8, 3)).unwrap();
        let windows: Vec<(f32, f32)> = rgb.channels.iter().map(|c| (c.min, c.max)).collect();
        assert_eq!(windows, [(0.0, 255.0); 3]);
        let colours: Vec<[u8; 3]> = rgb.channels.iter().map(|c| c.color).collect();
        assert_eq!(colours, [[255, 0, 0], [0, 255, 0], [0, 0, 255]]);
        // 16-bit channels: each its own 0.5-99.5 % window (0.5 % of 200 values: the first).
        let two = Display::auto(&stack(PixelKind::U16, 2)).unwrap();
        assert_eq!((two.channels[1].min, two.channels[1].max), (11.0, 208.0));
        assert!(two.fits(2) && !two.fits(1) && !two.fits(3));
        assert!(
            Display::auto(&stack(PixelKind::U8, 1))
                .unwrap()
                .channels
                .is_empty()
        );
    }
}
