//! Starting the desktop app (eframe with the wgpu renderer).

use anyhow::Result;

/// Opens the desktop app (eframe with the wgpu renderer), computing where `device` says.
pub fn run_gui(open: crate::app::OpenRequest, device: crate::ml::DeviceChoice) -> Result<()> {
    let mut wgpu_options = eframe::egui_wgpu::WgpuConfiguration::default();
    if let eframe::egui_wgpu::WgpuSetup::CreateNew(create) = &mut wgpu_options.wgpu_setup {
        create.device_descriptor = std::sync::Arc::new(crate::app::device_descriptor);
    }
    let options = eframe::NativeOptions {
        renderer: eframe::Renderer::Wgpu,
        wgpu_options,
        viewport: eframe::egui::ViewportBuilder::default()
            .with_title("unet-studio")
            .with_icon(
                eframe::icon_data::from_png_bytes(include_bytes!("../../assets/icon.png"))
                    .unwrap_or_default(),
            )
            .with_inner_size([1280.0, 820.0])
            .with_drag_and_drop(true),
        ..Default::default()
    };
    eframe::run_native(
        "unet-studio",
        options,
        Box::new(move |cc| {
            Ok(Box::new(crate::app::StudioApp::on_device(
                cc,
                Some(open),
                device,
            )))
        }),
    )
    .map_err(|e| anyhow::anyhow!("the window could not be opened: {e}"))
}
