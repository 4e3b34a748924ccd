//! What a project remembers besides its labels: class names and colours, the display's
//! contrast window (saved as `labels.unet.json`).

use crate::data::Stack;
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
    /// The automatic display of `stack`: each channel's 0.5-99.5 % window of the first slice.
    pub fn auto(stack: &Stack) -> Self {
        let (min, max) = auto_window(stack, 0, 0);
        let channels = if stack.channels > 1 {
            (0..stack.channels)
                .map(|c| {
                    let (min, max) = auto_window(stack, 0, c);
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
        Self {
            min,
            max,
            gamma: 1.0,
            channels,
        }
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

/// The 0.5 % and 99.5 % percentiles of channel `channel` of a slice: the automatic contrast
/// window.
pub fn auto_window(stack: &Stack, slice: usize, channel: usize) -> (f32, f32) {
    let slice = slice.min(stack.slices().saturating_sub(1));
    let data = &stack.channel(slice, channel.min(stack.channels - 1)).data;
    let lo = percentile(data, 0.5);
    let hi = percentile(data, 99.5);
    if hi > lo { (lo, hi) } else { (lo, lo + 1.0) }
}
