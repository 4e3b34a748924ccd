//! The application state ([`StudioApp`]): the open document, the view, the tools, the model
//! and the background jobs, with its core commands (open, save, undo, slice). What the other
//! parts of the app do is in [`super::actions`]; what it draws is in [`crate::ui`].

use crate::data::{DataError, LabelEncoding};
use crate::jobs::Waker;
use eframe::egui;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::augment_view::AugmentView;
use super::compare::CompareView;
use super::dialogs::Dialogs;
use super::import::ImportView;
use super::jobs::{JobKind, Jobs, Message, OpenResult};
use super::model::ModelState;
use super::viewer::ViewerState;
use crate::project::collection::Collection;
use crate::project::{Document, LoadedModel, Saved};

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
    /// `images` is this collection (known already: not read again to find out).
    pub collection: Option<Collection>,
    /// The image of the collection to open (default: the first).
    pub collection_image: Option<usize>,
    /// Read a multipage TIFF slice by slice even when it fits in memory (a stack larger than
    /// memory is read so anyway).
    pub slice_by_slice: bool,
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
            collection: None,
            collection_image: None,
            slice_by_slice: false,
        }
    }
}

/// The device descriptor the app asks eframe for (see [`crate::ml::device::shared_device_descriptor`]).
pub fn device_descriptor(
    adapter: &eframe::wgpu::Adapter,
) -> eframe::wgpu::DeviceDescriptor<'static> {
    crate::ml::device::shared_device_descriptor(adapter)
}

/// burn on eframe's wgpu device (see [`crate::ml::device::share_wgpu`]), or the CPU with the
/// reason.
pub fn shared_compute_device(
    rs: &eframe::egui_wgpu::RenderState,
    allow_software: bool,
) -> crate::ml::ComputeDevice {
    crate::ml::device::share_wgpu(
        crate::ml::device::WgpuParts {
            instance: rs.instance.clone(),
            adapter: rs.adapter.clone(),
            device: rs.device.clone(),
            queue: rs.queue.clone(),
        },
        allow_software,
    )
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
    /// The collection the document is an image of, and its index there.
    pub collection: Option<(Collection, usize)>,
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
    /// Recently opened stacks, most recent first.
    pub recent: Vec<PathBuf>,
    /// Where `recent.json` lives (none: nothing is remembered).
    pub config_dir: Option<PathBuf>,
    /// Where the work on the bundled sample and on read-only stacks is kept.
    pub data_dir: Option<PathBuf>,
    /// An opened stack to add to the recent list once the list job is free.
    pub(crate) remember_next: Option<PathBuf>,
    /// Files written by the last export.
    pub last_export: Option<Vec<PathBuf>>,
    /// The background jobs, reporting over one message stream.
    pub(crate) jobs: Jobs,
    /// File > Save labels was chosen: the next save writes the whole label file.
    pub(crate) full_save_requested: bool,
    /// File > Quit saved the labels and asked the window to close.
    pub quit_requested: bool,
    pub(crate) viewer: ViewerState,
}

impl StudioApp {
    /// Creates the app; installs the viewer pipeline on eframe's wgpu device and starts
    /// opening `open` in the background. Training and prediction run on the same wgpu device
    /// when burn accepts it, on the CPU otherwise (the status bar says which, and why).
    pub fn new(cc: &eframe::CreationContext<'_>, open: Option<OpenRequest>) -> Self {
        Self::on_device(cc, open, crate::ml::DeviceChoice::Auto)
    }

    /// [`Self::new`] computing where `choice` says: `Auto` takes the display's GPU unless it
    /// is a software renderer, `Gpu` takes it even then, `Cpu` the CPU backend. Without the
    /// display's GPU (no wgpu renderer, or burn refuses it) the CPU, with the reason.
    pub fn on_device(
        cc: &eframe::CreationContext<'_>,
        open: Option<OpenRequest>,
        choice: crate::ml::DeviceChoice,
    ) -> Self {
        let compute = match (cc.wgpu_render_state.as_ref(), choice) {
            (_, crate::ml::DeviceChoice::Cpu) | (None, _) => crate::ml::device::cpu_device(),
            (Some(rs), crate::ml::DeviceChoice::Auto) => shared_compute_device(rs, false),
            (Some(rs), crate::ml::DeviceChoice::Gpu) => shared_compute_device(rs, true),
        };
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
            collection: None,
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
            saved_settings: None,
            last_export: None,
            jobs: Jobs::new(waker),
            full_save_requested: false,
            quit_requested: false,
            viewer: ViewerState::default(),
        };
        if let Some(dir) = app.config_dir.clone() {
            app.jobs.spawn(JobKind::Recent, "recent files", move |_| {
                Message::RecentFiles(crate::project::recent::load(&dir))
            });
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
        self.jobs.spawn(JobKind::Open, "open", move |_| {
            Message::Opened(Box::new(open_stack(&req, data_dir.as_deref(), &device)))
        });
    }
}

/// Opens the stack `req` asks for, with its labels, model and versions (in a job).
fn open_stack(
    req: &OpenRequest,
    data_dir: Option<&Path>,
    device: &burn::prelude::Device,
) -> OpenResult {
    // A folder of images that differ is a collection: one of its images is opened.
    let collection = match &req.collection {
        Some(c) => Some(c.clone()),
        None if req.labels.is_none() => Collection::detect(&req.images, data_dir, req.in_data_dir)?,
        None => None,
    };
    let (doc, collection) = match collection {
        Some(c) => {
            let index = req.collection_image.unwrap_or(0).min(c.files.len() - 1);
            (c.open(index)?, Some((c, index)))
        }
        None => {
            let (label_path, work_note) =
                crate::project::work::work_label_path(&req.images, data_dir, req.in_data_dir);
            let mut doc = Document::open_at(
                &req.images,
                req.labels.as_ref().map(|(p, e)| (p.as_path(), *e)),
                label_path,
                req.initial_labels.as_ref().map(|(p, e)| (p.as_path(), *e)),
                req.slice_by_slice,
            )?;
            doc.work_note = work_note;
            (doc, None)
        }
    };
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
            .and_then(|c| LoadedModel::from_checkpoint(&c, device, Some(dir.clone())))
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
    Ok((doc, model, warning, history, collection))
}

impl StudioApp {
    pub(crate) fn apply_open(&mut self, res: OpenResult) {
        match res {
            Ok((doc, model, warning, history, collection)) => {
                self.models.history = history;
                // The model stays when the next stack (or image) has none saved.
                self.collection = collection;
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
                    "opened {} ({}, {}x{}, {:?}{})",
                    doc.source.display(),
                    doc.stack.shape_text(),
                    doc.stack.width,
                    doc.stack.height,
                    doc.stack.kind,
                    doc.stack
                        .pixel_size
                        .as_ref()
                        .map(|p| format!(", pixel {} x {} {}", p.x, p.y, p.unit))
                        .unwrap_or_default()
                );
                if doc.stack.on_demand() {
                    self.status
                        .push_str("; read slice by slice (exports predict one slice at a time)");
                }
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
                // A collection is reopened as the folder, not one of its images.
                self.remember_next = Some(match &self.collection {
                    Some((c, _)) => c.folder.clone(),
                    None => doc.source.clone(),
                });
                if let Some((c, i)) = &self.collection {
                    self.status.push_str(&format!(
                        "; image {} of {} of the collection {}",
                        i + 1,
                        c.files.len(),
                        c.folder.display()
                    ));
                }
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
        if self.jobs.running(JobKind::SaveLabels) {
            return;
        }
        let Some(doc) = &mut self.doc else { return };
        if doc.in_stroke() || !(doc.dirty || self.full_save_requested) {
            return;
        }
        let work = doc.take_save_work(std::mem::take(&mut self.full_save_requested));
        self.jobs
            .spawn(JobKind::SaveLabels, "save labels", move |_| {
                Message::LabelsSaved(work.run())
            });
    }

    /// Waits for a running save, then writes the whole label file and removes the journal
    /// (on exit, so that other programs find complete labels).
    pub fn flush_labels(&mut self) -> Result<(), DataError> {
        if let Some(Message::LabelsSaved(res)) = self.jobs.wait(JobKind::SaveLabels)
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

    /// Opens image `index` of the open collection, the labels of the shown one written to
    /// their file first (a failure is shown and the shown image stays).
    pub fn open_collection_image(&mut self, index: usize) {
        let Some((c, current)) = self.collection.clone() else {
            return;
        };
        if index == current || index >= c.files.len() || self.jobs.running(JobKind::Open) {
            return;
        }
        if let Err(e) = self.flush_labels() {
            self.error = Some(format!(
                "the labels could not be saved, staying on this image: {e}"
            ));
            return;
        }
        self.open(OpenRequest {
            images: c.folder.clone(),
            collection: Some(c),
            collection_image: Some(index),
            ..OpenRequest::default()
        });
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

    /// Adds the stack opened last to the recent files, in the background (one update at a
    /// time).
    pub(crate) fn remember_recent(&mut self) {
        if self.jobs.running(JobKind::Recent) {
            return;
        }
        if let Some(dir) = self.config_dir.clone()
            && let Some(opened) = self.remember_next.take()
        {
            self.jobs.spawn(JobKind::Recent, "recent files", move |_| {
                Message::RecentFiles(crate::project::recent::remember(&dir, &opened))
            });
        }
    }

    /// Saves class names, colours and contrast in the background when they changed (one save
    /// at a time; a change made while one runs is saved after it).
    pub(crate) fn save_settings_if_changed(&mut self) {
        let Some(doc) = &self.doc else { return };
        if self.jobs.running(JobKind::SaveSettings)
            || self.saved_settings.as_ref() == Some(&doc.settings())
        {
            return;
        }
        let settings = doc.settings();
        let path = doc.project_path();
        self.saved_settings = Some(settings.clone());
        self.jobs
            .spawn(JobKind::SaveSettings, "save settings", move |_| {
                Message::SettingsSaved(Document::save_settings(&path, &settings))
            });
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
