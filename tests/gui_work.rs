//! Where the app keeps a stack's work, and that a restart resumes it: painted labels, the
//! trained model and its history survive quitting and reopening the bundled sample; the
//! install (the checkout's `samples/`) and read-only folders are never written.

use std::path::{Path, PathBuf};

use egui_kittest::kittest::Queryable as _;
use unet_studio::app::OpenRequest;
use unet_studio::data::{LabelEncoding, load_label_stack};

mod common;
use common::{copy_sample, harness_for, paint_at};

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("unet-work-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The names of the open stack's classes.
fn class_names(h: &egui_kittest::Harness<'static, unet_studio::app::StudioApp>) -> Vec<String> {
    let doc = h.state().doc.as_ref().expect("a stack is open");
    doc.classes.iter().map(|c| c.name.clone()).collect()
}

#[test]
fn the_sample_resumes_its_own_labels_and_model_after_a_restart() {
    let config = tempdir("sample");
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/isbi2012/images");
    let listing = |d: &Path| {
        let mut v: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    };
    let before = listing(&samples);

    let mut h = harness_for(OpenRequest::sample(), config.clone());
    let label_path = h
        .state()
        .doc
        .as_ref()
        .expect("the sample opened")
        .label_path
        .clone();
    assert!(
        label_path.starts_with(config.join("data")),
        "the sample's work goes to the data folder: {}",
        label_path.display()
    );
    assert!(h.state().status.contains("kept in"), "{}", h.state().status);
    let scribbles = h.state().doc.as_ref().unwrap().labels.clone();
    assert!(
        scribbles[0].data.iter().any(|&v| v > 0),
        "the sample's strokes"
    );
    assert!(h.state().models.model.is_some(), "the bundled model");
    // The sample's classes are named by its model: class 1 membrane, class 2 cell.
    assert_eq!(class_names(&h), ["membrane", "cell"]);
    // Paint a stroke of class 2 where the slice is unlabelled, then quit (full save).
    h.state_mut().active_class = 2;
    paint_at(&mut h, 300.5, 420.5);
    let painted = h.state().doc.as_ref().unwrap().labels.clone();
    assert_ne!(painted, scribbles);
    h.state_mut().finish_jobs();
    // Train a model of this stack's own (from scratch: a fine-tune of the bundled model on
    // strokes it already gets right keeps the bundled model and adds no version).
    h.state_mut().reset_model();
    h.state_mut().models.iterations = 3;
    // A frame first: the panel loses the model's rows, and the button moves.
    h.run_steps(1);
    h.get_by_label("Train").click();
    h.run_steps(2);
    h.state_mut().finish_jobs();
    h.run_steps(2);
    h.state_mut().finish_jobs();
    let trained_history = h.state().models.history.len();
    assert!(trained_history >= 1);
    let version_dir = h.state().doc.as_ref().unwrap().model_dir();
    let trained = unet_studio::ml::load_checkpoint(&version_dir).unwrap();
    h.state_mut().flush_labels().unwrap();
    drop(h);

    // Restart on the sample: the painted labels come back, not the sample's strokes, and the
    // stack's own model, not the bundled one.
    let mut h = harness_for(OpenRequest::sample(), config.clone());
    h.state_mut().finish_jobs();
    assert_eq!(h.state().doc.as_ref().unwrap().labels, painted);
    let model = h.state().models.model.as_ref().unwrap();
    assert_eq!(model.path.as_deref(), Some(version_dir.as_path()));
    assert_eq!(model.iteration, trained.meta.iteration);
    assert_eq!(h.state().models.history.len(), trained_history);
    // Quitting again keeps them.
    h.state_mut().flush_labels().unwrap();
    let saved = load_label_stack(&label_path).unwrap();
    assert_eq!(saved[0].map(|v| v as u8), painted[0]);
    // The checkout's sample folder was never written.
    assert_eq!(listing(&samples), before);
}

#[test]
fn a_read_only_folder_keeps_its_work_in_the_data_folder() {
    let dir = copy_sample("read-only");
    let config = tempdir("read-only-config");
    let images = dir.join("images");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&images, std::fs::Permissions::from_mode(0o555)).unwrap();
    let mut h = harness_for(
        OpenRequest {
            images: images.clone(),
            labels: Some((dir.join("scribbles"), LabelEncoding::Classes)),
            ..Default::default()
        },
        config.clone(),
    );
    let doc = h.state().doc.as_ref().expect("opened");
    assert!(doc.label_path.starts_with(config.join("data")));
    let status = h.state().status.clone();
    assert!(
        status.contains("read-only") && status.contains("kept in"),
        "{status}"
    );
    h.state_mut().finish_jobs();
    h.state_mut().flush_labels().unwrap();
    assert!(!images.join("labels.unet.tif").exists());
    std::fs::set_permissions(&images, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Reopened without the import, the saved work is found again.
    let h2 = harness_for(
        OpenRequest {
            images,
            ..Default::default()
        },
        config,
    );
    drop(h);
    let doc2 = h2.state().doc.as_ref().unwrap();
    assert!(doc2.labels[0].data.iter().any(|&v| v > 0));
}

/// Found by hand: a stack in a read-only folder opened without labels to import; the first
/// stroke's autosave (a journal record, not a whole label file) failed with "No such file or
/// directory" because the stack's folder in the data folder did not exist yet.
#[test]
fn the_first_autosave_of_a_stack_in_a_read_only_folder_works() {
    let dir = copy_sample("read-only-first");
    let config = tempdir("read-only-first-config");
    let images = dir.join("images");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&images, std::fs::Permissions::from_mode(0o555)).unwrap();
    let mut h = harness_for(
        OpenRequest {
            images: images.join("slice01.png"),
            ..Default::default()
        },
        config.clone(),
    );
    let label_path = h.state().doc.as_ref().expect("opened").label_path.clone();
    assert!(label_path.starts_with(config.join("data")));
    paint_at(&mut h, 300.5, 420.5);
    h.state_mut().finish_jobs();
    h.run_steps(2);
    assert!(h.state().error.is_none(), "{:?}", h.state().error);
    let journal = unet_studio::data::journal::journal_path(&label_path);
    assert!(journal.exists(), "the stroke is in the journal");
    let painted = h.state().doc.as_ref().unwrap().labels.clone();
    drop(h);
    // Reopened (the process gone without a full save): the journal brings the stroke back.
    let h = harness_for(
        OpenRequest {
            images: images.join("slice01.png"),
            ..Default::default()
        },
        config,
    );
    assert_eq!(h.state().doc.as_ref().unwrap().labels, painted);
    std::fs::set_permissions(&images, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn file_quit_saves_the_labels_and_closes_and_edit_follows_file() {
    use egui_kittest::kittest::Queryable as _;
    let dir = copy_sample("quit");
    let mut h = common::harness(&dir);
    // The menus read File, Edit, Export, Help.
    let xs: Vec<f32> = ["File", "Edit", "Export", "Help"]
        .iter()
        .map(|m| h.get_by_label(m).rect().min.x)
        .collect();
    assert!(xs.windows(2).all(|w| w[0] < w[1]), "{xs:?}");
    paint_at(&mut h, 300.5, 420.5);
    let painted = h.state().doc.as_ref().unwrap().labels.clone();
    h.get_by_label("File").click();
    h.run_steps(2);
    h.get_by_label("Quit").click();
    h.run_steps(2);
    assert!(h.state().quit_requested, "{:?}", h.state().error);
    let label_file = dir.join("images/labels.unet.tif");
    assert!(!unet_studio::data::journal::journal_path(&label_file).exists());
    let saved = load_label_stack(&label_file).unwrap();
    assert_eq!(saved[0].map(|v| v as u8), painted[0]);
}

#[test]
fn a_new_stack_takes_its_class_names_and_views_from_its_model() {
    use unet_studio::ml::{CheckpointMeta, Preset, UNetConfig, save_checkpoint};
    let dir = copy_sample("class-names");
    let cpu = unet_studio::ml::device::cpu_device();
    let unet = UNetConfig {
        class_names: vec!["membrane".into(), "cell".into()],
        ..UNetConfig::preset(Preset::Lite, 2)
    };
    let model_dir = dir.join("model");
    save_checkpoint(
        &model_dir,
        &CheckpointMeta {
            threshold: Some(0.5),
            threshold_views: Some(8),
            ..CheckpointMeta::new(unet.clone(), 0, "test")
        },
        &unet.init(&cpu.device),
        None,
    )
    .unwrap();
    let config = tempdir("class-names-config");
    let open = |config: PathBuf| {
        harness_for(
            OpenRequest {
                images: dir.join("images"),
                model: Some(model_dir.clone()),
                ..Default::default()
            },
            config,
        )
    };
    let mut h = open(config.clone());
    assert_eq!(class_names(&h), ["membrane", "cell"]);
    // Its threshold was chosen for the mean of 8 views: predictions use 8.
    assert_eq!(h.state().models.tta_views, 8);
    // Names the user gives win over the model's in the next session.
    h.state_mut().doc.as_mut().unwrap().classes[1].name = "cell interior".into();
    h.run_steps(3);
    h.state_mut().finish_jobs();
    drop(h);
    let h = open(config);
    assert_eq!(
        h.state().doc.as_ref().unwrap().classes[1].name,
        "cell interior"
    );
}

/// Where no system file dialog exists (no desktop portal, no zenity, as on this machine and in
/// CI), Export opens unet-studio's own chooser in the window, starting beside the stack with
/// the suggested name, and its Save button writes the file (before, nothing happened).
#[test]
fn export_through_the_builtin_file_chooser() {
    let dir = copy_sample("chooser");
    let mut h = common::harness(&dir);
    h.state_mut().dialogs.builtin_only = true;
    h.get_by_label("Export").click();
    h.run_steps(2);
    h.get_by_label("Painted labels…").click();
    h.run_steps(3);
    assert!(h.state().dialogs.busy(), "the chooser is open");
    // It starts beside the stack (the sample is a folder of slices: next to that folder, so
    // the export is not read as a slice next time), with the kind's default name.
    h.get_by_label("Save").click();
    h.run_steps(3);
    h.state_mut().finish_jobs();
    h.run_steps(2);
    let written = dir.join("labels.tif");
    assert!(written.exists(), "{} was written", written.display());
    assert!(!h.state().dialogs.busy());
    assert!(
        h.state().status.starts_with("exported"),
        "{}",
        h.state().status
    );
    let back = load_label_stack(&written).unwrap();
    assert_eq!(back.len(), h.state().doc.as_ref().unwrap().slices());
    // Cancelling writes nothing and closes the chooser.
    h.get_by_label("Export").click();
    h.run_steps(2);
    h.get_by_label("Painted labels…").click();
    h.run_steps(3);
    h.get_by_label("Cancel").click();
    h.run_steps(3);
    assert!(!h.state().dialogs.busy());
}

/// The bundled sample lives in the install: a file chooser opened on it starts in the home
/// folder, never in the sample's folder (an export there wrote into the checkout once).
#[test]
fn choosers_on_the_sample_start_in_the_home_folder() {
    use unet_studio::app::dialogs::{Pick, Purpose, export_filters};
    let config = tempdir("chooser-home-config");
    let mut h = harness_for(OpenRequest::sample(), config);
    h.state_mut().dialogs.builtin_only = true;
    h.state_mut().ask_path(
        Purpose::Export(unet_studio::app::ExportKind::Labels),
        Pick::Save("labels.tif".into(), export_filters()),
    );
    let start = h.state().dialogs.start_dir.clone().expect("a start folder");
    let home = std::env::var_os("HOME").map(PathBuf::from).expect("HOME");
    assert_eq!(start, std::fs::canonicalize(&home).unwrap_or(home));
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
    assert!(!start.starts_with(&samples), "{}", start.display());
    h.run_steps(2);
    h.get_by_label("Cancel").click();
    h.run_steps(2);
    assert!(!h.state().dialogs.busy());
}
