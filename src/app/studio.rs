//! The application state ([`StudioApp`]): the open document, the view, the tools, the model
//! and the background jobs, with its core commands (open, save, undo, slice). What the other
//! parts of the app do is in [`super::actions`]; what it draws is in [`crate::ui`].

use crate::data::{DataError, LabelEncoding};
use crate::jobs::{Job, Waker};
use eframe::egui;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::augment_view::AugmentView;
use super::compare::CompareView;
use super::dialogs::Dialogs;
use super::import::ImportView;
use super::model::ModelState;
use super::viewer::ViewerState;
use crate::project::{Document, LoadedModel, Saved};

/// Removes a job that ended without a result (it panicked) and says what failed.
fn take_failed<T, P>(job: &mut Option<Job<T, P>>, what: &str) -> Option<String> {
    if job.as_ref().is_some_and(Job::is_finished) {
        let failure = job.take().and_then(|j| j.failure).unwrap_or_default();
        return Some(format!("{what} failed: {failure}"));
    }
    None
}

/// An open job's result: the document and the model found for it (or why it failed).
type OpenResult = Result<
    (
        Document,
        Option<LoadedModel>,
        Option<String>,
        Vec<crate::project::VersionInfo>,
    ),
    DataError,
>;

/// An export job's result: the files written and a summary.
type ExportJob = Job<Result<(Vec<PathBuf>, String), DataError>>;

/// What to open at start-up.
#[derive(Clone, Debug, Default)]
pub struct OpenRequest {
    /// Image file, multipage TIFF or folder.
    pub images: PathBuf,
    /// Labels to import instead of the saved ones.
    pub labels: Option<(PathBuf, LabelEncoding)>,
    /// Model folder to load (otherwise the one saved beside the labels, if any).
    pub model: Option<PathBuf>,
    /// Labels to start from when the stack has no saved work yet (never over saved labels).
    pub initial_labels: Option<(PathBuf, LabelEncoding)>,
    /// Model to start from when the stack has no saved model yet.
    pub initial_model: Option<PathBuf>,
    /// Keep this stack's work in the user's data folder even when its folder is writable
    /// (the bundled sample; read-only folders go there anyway).
    pub in_data_dir: bool,
}

impl OpenRequest {
    /// The bundled sample: three ISBI 2012 EM slices with sparse scribbles.
    pub fn sample() -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/isbi2012");
        let here = Path::new("samples/isbi2012");
        let root = if here.exists() {
            here.to_path_buf()
        } else {
            root
        };
        let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/model");
        let model = if Path::new("samples/model").exists() {
            Some(PathBuf::from("samples/model"))
        } else {
            model.exists().then_some(model)
        };
        Self {
            images: root.join("images"),
            labels: None,
            model: None,
            initial_labels: Some((root.join("scribbles"), LabelEncoding::Classes)),
            initial_model: model,
            in_data_dir: true,
        }
    }
}

/// The device descriptor the app asks eframe for: the adapter's own limits and features
/// (as burn's wgpu runtime requests them), so that burn can compute on the display's device.
pub fn device_descriptor(
    adapter: &eframe::wgpu::Adapter,
) -> eframe::wgpu::DeviceDescriptor<'static> {
    eframe::wgpu::DeviceDescriptor {
        label: Some("unet-studio device"),
        required_features: adapter
            .features()
            .difference(eframe::wgpu::Features::MAPPABLE_PRIMARY_BUFFERS),
        required_limits: adapter.limits(),
        ..Default::default()
    }
}

/// Registers eframe's wgpu device with burn; falls back to the CPU with the reason. A
/// software adapter (lavapipe, llvmpipe) is declined unless `allow_software`: burn's own CPU
/// backend is much faster than a GPU emulated on the CPU.
pub fn shared_compute_device(
    rs: &eframe::egui_wgpu::RenderState,
    allow_software: bool,
) -> crate::ml::ComputeDevice {
    let info = rs.adapter.get_info();
    if info.device_type == eframe::wgpu::DeviceType::Cpu && !allow_software {
        let mut cpu = crate::ml::device::cpu_device();
        cpu.fallback_reason = Some(crate::ml::device::software_adapter_reason(&info.name));
        return cpu;
    }
    let setup = burn::tensor::wgpu::WgpuSetup {
        instance: rs.instance.clone(),
        adapter: rs.adapter.clone(),
        device: rs.device.clone(),
        queue: rs.queue.clone(),
        backend: info.backend,
    };
    let init =
        std::panic::AssertUnwindSafe(|| burn::prelude::Device::wgpu_options().setup(setup).init());
    match std::panic::catch_unwind(init) {
        Ok(Ok(device)) => crate::ml::ComputeDevice {
            device,
            is_gpu: true,
            description: format!(
                "GPU: {} via {:?} (shared with the display)",
                info.name, info.backend
            ),
            fallback_reason: None,
            software: info.device_type == eframe::wgpu::DeviceType::Cpu,
            memory: crate::ml::memory::MemoryLimits::of_wgpu(&rs.device, &rs.adapter),
        },
        Ok(Err(e)) => {
            let mut cpu = crate::ml::device::cpu_device();
            cpu.fallback_reason = Some(format!("the display's GPU was refused by burn: {e}"));
            cpu
        }
        Err(_) => {
            let mut cpu = crate::ml::device::cpu_device();
            cpu.fallback_reason = Some("initialising burn on the display's GPU failed".into());
            cpu
        }
    }
}

/// Painting tools.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    /// Paint the active class.
    Brush,
    /// Set pixels back to unlabelled.
    Eraser,
    /// Fill the connected region of the clicked label (napari's fill).
    Fill,
    /// Draw a closed outline; its inside is filled.
    Lasso,
}

/// View state of the canvas.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ViewState {
    /// Shown slice.
    pub slice: usize,
    /// Screen points per image pixel.
    pub zoom: f32,
    /// Image coordinates at the canvas' top-left corner.
    pub origin: egui::Vec2,
    /// Fit the image into the canvas on the next frame.
    pub fit: bool,
    /// The canvas the image was last fitted to; while the user has not zoomed or panned
    /// since, a canvas of another size (panels settling, window resized) fits it again.
    pub fitted: Option<egui::Rect>,
}

/// The application state.
pub struct StudioApp {
    /// The open document.
    pub doc: Option<Document>,
    /// The view.
    pub view: ViewState,
    /// Active tool.
    pub tool: Tool,
    /// Brush radius in image pixels.
    pub brush_radius: f32,
    /// Eraser radius in image pixels.
    pub eraser_radius: f32,
    /// Class painted by the brush (1-based).
    pub active_class: u8,
    /// Paint only unlabelled pixels.
    pub preserve_labels: bool,
    /// Label overlay opacity.
    pub label_opacity: f32,
    /// Show the label overlay.
    pub show_labels: bool,
    /// Dim pixels that carry no label.
    pub show_only_labelled: bool,
    /// Last message for the status bar.
    pub status: String,
    /// Last error, shown until dismissed.
    pub error: Option<String>,
    /// Whether the wgpu viewer pipeline is installed.
    pub renderer_ready: bool,
    /// Rendering adapter, for the status bar.
    pub adapter: String,
    /// Largest texture edge of the image display: the device's limit (larger images are
    /// drawn as several texture tiles), lowered by [`Self::set_texture_tile_edge`].
    pub max_texture_edge: u32,
    /// Where the canvas was drawn in the last frame (screen points).
    pub canvas_rect: egui::Rect,
    /// Network, training and prediction.
    pub models: ModelState,
    /// The keyboard help window is open (`?` or F1).
    pub show_help: bool,
    /// The augmentation (elastic deformation) view.
    pub augment: AugmentView,
    /// Two model versions side by side.
    pub compare: CompareView,
    /// File > Import labels.
    pub import: ImportView,
    /// The open file dialog (the system's, or unet-studio's own where there is none).
    pub dialogs: Dialogs,
    /// Settings last written (to save them again only when they change).
    pub(crate) saved_settings: Option<crate::project::ProjectSettings>,
    pub(crate) settings_job: Option<Job<Result<(), DataError>>>,
    /// Recently opened stacks, most recent first.
    pub recent: Vec<PathBuf>,
    /// Where `recent.json` lives (none: nothing is remembered).
    pub config_dir: Option<PathBuf>,
    /// Where the work on the bundled sample and on read-only stacks is kept.
    pub data_dir: Option<PathBuf>,
    /// An opened stack to add to the recent list once the list job is free.
    pub(crate) remember_next: Option<PathBuf>,
    pub(crate) recent_job: Option<Job<Result<Vec<PathBuf>, DataError>>>,
    /// Files written by the last export.
    pub last_export: Option<Vec<PathBuf>>,
    pub(crate) export_job: Option<ExportJob>,
    pub(crate) open_job: Option<Job<OpenResult>>,
    pub(crate) save_job: Option<Job<Result<Saved, DataError>>>,
    /// File > Save labels was chosen: the next save writes the whole label file.
    pub(crate) full_save_requested: bool,
    /// File > Quit saved the labels and asked the window to close.
    pub quit_requested: bool,
    pub(crate) waker: Waker,
    pub(crate) viewer: ViewerState,
}

impl StudioApp {
    /// Creates the app; installs the viewer pipeline on eframe's wgpu device and starts
    /// opening `open` in the background. Training and prediction run on the same wgpu device
    /// when burn accepts it, on the CPU otherwise (the status bar says which, and why).
    pub fn new(cc: &eframe::CreationContext<'_>, open: Option<OpenRequest>) -> Self {
        let compute = cc
            .wgpu_render_state
            .as_ref()
            .map_or_else(crate::ml::device::cpu_device, |rs| {
                shared_compute_device(rs, false)
            });
        Self::with_options(cc, open, compute, crate::project::recent::config_dir())
    }

    /// Like [`Self::new`] with an explicit compute device and configuration folder (tests
    /// pin both). The data folder is the user's ([`crate::project::recent::data_dir`]) with the user's
    /// configuration folder, else `data/` inside the given one.
    pub fn with_options(
        cc: &eframe::CreationContext<'_>,
        open: Option<OpenRequest>,
        compute: crate::ml::ComputeDevice,
        config_dir: Option<PathBuf>,
    ) -> Self {
        let data_dir = if config_dir.is_some() && config_dir == crate::project::recent::config_dir()
        {
            crate::project::recent::data_dir()
        } else {
            config_dir.as_ref().map(|c| c.join("data"))
        };
        let ctx = cc.egui_ctx.clone();
        let waker: Waker = Arc::new(move || ctx.request_repaint());
        let (renderer_ready, adapter, max_texture_edge) = match cc.wgpu_render_state.as_ref() {
            Some(rs) => {
                crate::render::install(rs);
                let info = rs.adapter.get_info();
                (
                    true,
                    format!("{} ({:?})", info.name, info.backend),
                    crate::render::max_texture_edge(rs),
                )
            }
            None => (false, "no wgpu renderer".into(), 0),
        };
        let mut app = Self {
            doc: None,
            view: ViewState {
                slice: 0,
                zoom: 1.0,
                origin: egui::Vec2::ZERO,
                fit: true,
                fitted: None,
            },
            tool: Tool::Brush,
            brush_radius: 3.0,
            eraser_radius: 6.0,
            active_class: 1,
            preserve_labels: false,
            label_opacity: 0.6,
            show_labels: true,
            show_only_labelled: false,
            status: String::new(),
            error: (!renderer_ready)
                .then(|| "unet-studio needs the wgpu renderer; the image cannot be shown".into()),
            renderer_ready,
            adapter,
            max_texture_edge,
            canvas_rect: egui::Rect::NOTHING,
            models: ModelState::new(compute),
            show_help: false,
            augment: AugmentView::default(),
            compare: CompareView::default(),
            import: ImportView::default(),
            dialogs: Dialogs::default(),
            recent: Vec::new(),
            config_dir,
            data_dir,
            remember_next: None,
            recent_job: None,
            saved_settings: None,
            settings_job: None,
            last_export: None,
            export_job: None,
            open_job: None,
            save_job: None,
            full_save_requested: false,
            quit_requested: false,
            waker,
            viewer: ViewerState::default(),
        };
        if let Some(dir) = app.config_dir.clone() {
            app.recent_job = Some(Job::spawn("recent files", app.waker.clone(), move |_| {
                crate::project::recent::load(&dir)
            }));
        }
        if let Some(req) = open {
            app.open(req);
        }
        app
    }

    /// Starts opening a stack in the background.
    pub fn open(&mut self, req: OpenRequest) {
        self.status = format!("opening {}", req.images.display());
        let device = self.models.compute.device.clone();
        let data_dir = self.data_dir.clone();
        self.open_job = Some(Job::spawn("open", self.waker.clone(), move |_| {
            let (label_path, work_note) = crate::project::work::work_label_path(
                &req.images,
                data_dir.as_deref(),
                req.in_data_dir,
            );
            let mut doc = Document::open_at(
                &req.images,
                req.labels.as_ref().map(|(p, e)| (p.as_path(), *e)),
                label_path,
                req.initial_labels.as_ref().map(|(p, e)| (p.as_path(), *e)),
            )?;
            doc.work_note = work_note;
            // A model given explicitly, else the one trained on this stack before, else the
            // one it comes with.
            let own = doc.model_dir();
            let dir = match (&req.model, &req.initial_model) {
                (Some(m), _) => m.clone(),
                (None, Some(initial)) if !crate::ml::checkpoint::checkpoint_path(&own).exists() => {
                    initial.clone()
                }
                _ => own,
            };
            let (model, warning) = if crate::ml::checkpoint::checkpoint_path(&dir).exists() {
                match crate::ml::load_checkpoint(&dir)
                    .and_then(|c| LoadedModel::from_checkpoint(&c, &device, Some(dir.clone())))
                {
                    Ok(m) => (Some(m), None),
                    Err(e) => (
                        None,
                        Some(format!(
                            "the model in {} was not loaded: {e}",
                            dir.display()
                        )),
                    ),
                }
            } else {
                (None, None)
            };
            let history = crate::project::list_versions(&doc.model_dir());
            Ok((doc, model, warning, history))
        }));
    }

    /// Whether a background job runs.
    pub fn busy(&self) -> bool {
        self.open_job.is_some()
            || self.save_job.is_some()
            || self.models.training()
            || self.models.predicting()
            || self.models.weights_pending()
            || self.export_job.is_some()
            || self.augment.pending()
            || self.compare.job.is_some()
            || self.import.job.is_some()
            || self.settings_job.is_some()
            || self.recent_job.is_some()
    }

    /// Blocks until pending background jobs finish and applies their results (tests).
    pub fn finish_jobs(&mut self) {
        loop {
            self.poll_jobs();
            if !self.busy() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    pub(crate) fn apply_open(&mut self, res: OpenResult) {
        match res {
            Ok((doc, model, warning, history)) => {
                self.models.history = history;
                if let Some(w) = warning {
                    self.error = Some(w);
                }
                let mut doc = doc;
                // A new stack takes its class names from the model it opens with.
                if !doc.settings_restored
                    && let Some(m) = &model
                {
                    for (c, name) in doc.classes.iter_mut().zip(&m.unet.class_names) {
                        c.name.clone_from(name);
                    }
                }
                if let Some(m) = model {
                    self.models.set_model(m);
                }
                self.status = format!(
                    "opened {} ({} slices, {}x{}, {:?})",
                    doc.source.display(),
                    doc.slices(),
                    doc.stack.width,
                    doc.stack.height,
                    doc.stack.kind
                );
                if let Some(note) = &doc.work_note {
                    self.status.push_str(&format!("; {note}"));
                }
                if doc.recovered.records > 0 {
                    self.status.push_str(&format!(
                        "; restored {} autosaved stroke(s) from the journal",
                        doc.recovered.records
                    ));
                }
                self.view.slice = 0;
                self.view.fit = true;
                self.active_class = 1;
                self.viewer.invalidate();
                self.models.probabilities = vec![None; doc.slices()];
                self.saved_settings = Some(doc.settings());
                self.remember_next = Some(doc.source.clone());
                self.models.generation += 1;
                self.doc = Some(doc);
                // A stack that comes with its model shows the model's segmentation at once.
                if self.models.model.is_some() {
                    self.predict_slice();
                }
            }
            Err(e) => self.error = Some(e.to_string()),
        }
    }

    pub(crate) fn apply_save(&mut self, res: Result<Saved, DataError>) {
        if let Some(d) = &mut self.doc {
            d.saved(&res);
        }
        match res {
            Ok(Saved::Journal { blocks, bytes }) => {
                self.status = format!(
                    "autosaved {blocks} changed block{} (journal {:.1} MB)",
                    if blocks == 1 { "" } else { "s" },
                    bytes as f64 / 1e6
                );
            }
            Ok(Saved::Full(p)) => self.status = format!("labels saved to {}", p.display()),
            Err(e) => self.error = Some(format!("saving labels failed: {e}")),
        }
    }

    /// Saves the whole label file (File > Save labels): in the background, after a save
    /// that is running.
    pub fn save_labels(&mut self) {
        self.full_save_requested = true;
        self.autosave();
    }

    /// Autosave after every stroke: the changed blocks are appended to the journal in the
    /// background (the whole label file when requested or when the journal grew large). One
    /// save at a time; changes made while one runs are saved after it.
    pub(crate) fn autosave(&mut self) {
        if self.save_job.is_some() {
            return;
        }
        let Some(doc) = &mut self.doc else { return };
        if doc.in_stroke() || !(doc.dirty || self.full_save_requested) {
            return;
        }
        let work = doc.take_save_work(std::mem::take(&mut self.full_save_requested));
        self.save_job = Some(Job::spawn("save labels", self.waker.clone(), move |_| {
            work.run()
        }));
    }

    /// Waits for a running save, then writes the whole label file and removes the journal
    /// (on exit, so that other programs find complete labels).
    pub fn flush_labels(&mut self) -> Result<(), DataError> {
        if let Some(job) = self.save_job.take()
            && let Some(res) = job.wait()
            && let Some(d) = &mut self.doc
        {
            d.saved(&res);
        }
        match &mut self.doc {
            Some(d) if d.dirty || d.journal_bytes > 0 || d.full_save_needed => {
                d.save_labels().map(|_| ())
            }
            _ => Ok(()),
        }
    }

    /// File > Quit: writes the whole label file now (a failure is shown and the window stays
    /// open, so nothing is lost), then asks eframe to close the window.
    pub fn quit(&mut self, ctx: &egui::Context) {
        match self.flush_labels() {
            Ok(()) => {
                self.quit_requested = true;
                ctx.send_viewport_cmd(egui::ViewportCommand::Close);
            }
            Err(e) => {
                self.error = Some(format!("the labels could not be saved, not quitting: {e}"))
            }
        }
    }

    pub(crate) fn poll_jobs(&mut self) {
        if let Some(job) = &mut self.open_job
            && let Some(res) = job.poll()
        {
            self.open_job = None;
            self.apply_open(res);
        }
        if let Some(job) = &mut self.save_job
            && let Some(res) = job.poll()
        {
            self.save_job = None;
            self.apply_save(res);
        }
        self.poll_model_jobs();
        self.poll_export();
        self.poll_augment();
        self.poll_compare();
        self.poll_import();
        self.save_settings_if_changed();
        if let Some(job) = &mut self.recent_job
            && let Some(res) = job.poll()
        {
            self.recent_job = None;
            match res {
                Ok(list) => self.recent = list,
                Err(e) => self.status = format!("recent files: {e}"),
            }
        }
        if self.recent_job.is_none()
            && let Some(dir) = self.config_dir.clone()
            && let Some(opened) = self.remember_next.take()
        {
            self.recent_job = Some(Job::spawn("recent files", self.waker.clone(), move |_| {
                crate::project::recent::remember(&dir, &opened)
            }));
        }
        // Jobs that ended without a result: say so, keep everything else as it was.
        let failures = [
            take_failed(&mut self.open_job, "opening"),
            take_failed(&mut self.save_job, "saving labels"),
            take_failed(&mut self.export_job, "export"),
            take_failed(&mut self.settings_job, "saving settings"),
            take_failed(
                &mut self.models.train_job,
                "training (the previous model is kept)",
            ),
            take_failed(&mut self.models.predict_job, "prediction"),
            take_failed(&mut self.models.load_job, "loading the model"),
            take_failed(&mut self.models.save_job, "saving the model"),
            take_failed(&mut self.models.weights_job, "the weight map"),
            take_failed(&mut self.augment.job, "the deformation"),
            take_failed(&mut self.compare.job, "comparing model versions"),
            take_failed(&mut self.import.job, "importing labels"),
            take_failed(&mut self.recent_job, "the list of recent files"),
        ];
        if let Some(e) = failures.into_iter().flatten().next() {
            self.error = Some(e);
        }
        self.autosave();
    }

    /// Saves class names, colours and contrast in the background when they changed (one save
    /// at a time; a change made while one runs is saved after it).
    pub(crate) fn save_settings_if_changed(&mut self) {
        if let Some(job) = &mut self.settings_job
            && let Some(res) = job.poll()
        {
            self.settings_job = None;
            if let Err(e) = res {
                self.error = Some(format!("saving settings failed: {e}"));
            }
        }
        let Some(doc) = &self.doc else { return };
        if self.settings_job.is_some() || self.saved_settings.as_ref() == Some(&doc.settings()) {
            return;
        }
        let settings = doc.settings();
        let path = doc.project_path();
        self.saved_settings = Some(settings.clone());
        self.settings_job = Some(Job::spawn("save settings", self.waker.clone(), move |_| {
            Document::save_settings(&path, &settings)
        }));
    }

    /// Undo the last stroke, bringing a slice it changed into view.
    pub fn undo(&mut self) {
        if let Some(slices) = self.doc.as_mut().and_then(Document::undo) {
            self.show_changed("undone", &slices);
        }
    }

    /// Redo the last undone stroke, bringing a slice it changed into view.
    pub fn redo(&mut self) {
        if let Some(slices) = self.doc.as_mut().and_then(Document::redo) {
            self.show_changed("redone", &slices);
        }
    }

    /// After an undo or redo: stays on the shown slice if it changed, else shows the first
    /// slice that did, and says which.
    pub(crate) fn show_changed(&mut self, what: &str, slices: &std::collections::BTreeSet<usize>) {
        match slices.first() {
            Some(&first) if !slices.contains(&self.view.slice) => {
                self.set_slice(first);
                self.status = format!("{what} on slice {first}");
            }
            _ => self.status = what.into(),
        }
    }

    /// Moves to another slice.
    pub fn set_slice(&mut self, slice: usize) {
        if let Some(d) = &self.doc {
            let s = slice.min(d.slices().saturating_sub(1));
            if s != self.view.slice {
                self.view.slice = s;
                self.viewer.invalidate_slice();
            }
        }
    }
}
