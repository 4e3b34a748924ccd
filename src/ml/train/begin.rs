//! Where a run starts: a new network, or a checkpoint's weights (fine-tune) or its whole state
//! (resume), with what the checkpoint says about its decision rule.

use burn::optim::ModuleOptimizer;
use burn::prelude::*;

use crate::ml::checkpoint::{Checkpoint, load_checkpoint};
use crate::ml::config::TrainConfig;
use crate::ml::error::MlError;
use crate::ml::unet::{UNet, UNetConfig};
use crate::postprocess::Decision;

use super::events::StartFrom;

/// Where a run starts: the network, its optimiser and iteration, and what the starting
/// checkpoint says about its decision rule.
pub(crate) struct Begin {
    pub(crate) unet: UNetConfig,
    pub(crate) model: UNet,
    pub(crate) optim: ModuleOptimizer,
    pub(crate) first_iteration: u64,
    pub(crate) decision: Decision,
    pub(crate) threshold_views: Option<u8>,
    pub(crate) from_checkpoint: bool,
    /// Started from a checkpoint's weights with a fresh optimiser.
    pub(crate) fine_tune: bool,
}

impl Begin {
    /// The best network an earlier part of a resumed run kept in `out_dir` (beside the last
    /// state), when it is older than the state resumed and of the same network.
    pub(crate) fn kept_best(
        &self,
        cfg: &TrainConfig,
        out_dir: Option<&std::path::Path>,
    ) -> Option<Checkpoint> {
        if !self.from_checkpoint || self.fine_tune || !cfg.keep_best {
            return None;
        }
        let kept = load_checkpoint(out_dir?).ok()?;
        (kept.meta.iteration < self.first_iteration && kept.meta.unet == self.unet).then_some(kept)
    }

    pub(crate) fn new(start: StartFrom, cfg: &TrainConfig, ad: &Device) -> Result<Self, MlError> {
        let fresh = || cfg.optimizer.init_optimizer();
        Ok(match start {
            StartFrom::Scratch(u) => Self {
                decision: Decision::for_new_network(u.classes),
                model: u.init(ad),
                unet: u,
                optim: fresh(),
                first_iteration: 0,
                threshold_views: None,
                from_checkpoint: false,
                fine_tune: false,
            },
            StartFrom::FineTune(c) => Self {
                model: c.model(ad)?,
                unet: c.meta.unet.clone(),
                optim: fresh(),
                first_iteration: 0,
                decision: c.meta.decision(),
                threshold_views: c.meta.threshold_views,
                from_checkpoint: true,
                fine_tune: true,
            },
            StartFrom::Resume(c) => Self {
                optim: c.restore_optimizer(fresh())?,
                model: c.model(ad)?,
                unet: c.meta.unet.clone(),
                first_iteration: c.meta.iteration,
                decision: c.meta.decision(),
                threshold_views: c.meta.threshold_views,
                from_checkpoint: true,
                fine_tune: false,
            },
        })
    }
}
