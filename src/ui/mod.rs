//! What the app draws, each function given the [`crate::app::studio::StudioApp`] it shows:
//! the panels ([`panels`]; the stack's sliders and contrast in [`stack`], a collection's image
//! list in [`collection`]), the canvas ([`canvas`]), the windows ([`windows`]) and the
//! keyboard shortcuts ([`keys`]).

pub mod canvas;
pub mod collection;
pub mod keys;
pub mod panels;
pub mod stack;
pub mod windows;
