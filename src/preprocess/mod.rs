//! Everything computed from images and labels before the network sees them: normalisation,
//! the weight map, elastic deformation and other augmentation, overlap-tile geometry.

pub mod augment;
pub mod deform;
pub mod normalize;
pub mod rng;
pub mod tiles;
pub mod weights;

pub use augment::{AugmentConfig, D4, GreyJitter};
pub use deform::{DeformationField, ElasticConfig, Interpolation, warp_f32, warp_nearest};
pub use normalize::normalize_percentile;
pub use rng::Rng;
pub use tiles::{ConvPadding, TileGeometry, tile_origins};
pub use weights::{WeightMapConfig, class_weights, object_distances, weight_map};
