//! Runtime device selection: the wgpu backend on any GPU vendor, or the `flex` CPU backend.

use std::sync::OnceLock;

use burn::prelude::Device;
use burn::tensor::wgpu::wgpu;

use super::error::DeviceError;
use super::memory::MemoryLimits;

/// What the user asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The GPU when a hardware adapter exists, the CPU otherwise (a software adapter such as
    /// lavapipe is slower than the CPU backend: the same rule as the app's, see
    /// [`software_adapter_reason`]).
    #[default]
    Auto,
    /// The wgpu backend; an error when no adapter exists.
    Gpu,
    /// The `flex` CPU backend.
    Cpu,
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "gpu" | "wgpu" => Ok(Self::Gpu),
            "cpu" | "flex" => Ok(Self::Cpu),
            other => Err(format!("unknown device '{other}': use auto, gpu or cpu")),
        }
    }
}

/// A device together with a truthful description of it.
#[derive(Clone, Debug)]
pub struct ComputeDevice {
    /// The burn device (plain, without autodiff).
    pub device: Device,
    /// Whether this is the wgpu backend.
    pub is_gpu: bool,
    /// For example "GPU: llvmpipe (LLVM 15.0.6, 256 bits) via Vulkan (software adapter)" or
    /// "CPU (flex, 2 threads)".
    pub description: String,
    /// Why the CPU was chosen under `auto`, if it was.
    pub fallback_reason: Option<String>,
    /// A GPU adapter that is really the CPU (Mesa lavapipe, llvmpipe, WARP, SwiftShader):
    /// correct, but its speed says nothing about GPUs.
    pub software: bool,
    /// What the device can hold (tile sizes follow it).
    pub memory: MemoryLimits,
}

/// The GPU device of this process: burn's wgpu runtime can be initialised once only.
static GPU: OnceLock<Result<(Device, String, bool, MemoryLimits), String>> = OnceLock::new();

fn gpu() -> Result<(Device, String, bool, MemoryLimits), String> {
    GPU.get_or_init(|| {
        // Adapter acquisition can panic inside drivers; keep that from taking the app down.
        let res = std::panic::catch_unwind(|| Device::wgpu_options().init_with_setup());
        match res {
            Ok(Ok((device, setup))) => {
                let info = setup.adapter.get_info();
                let software = info.device_type == burn::tensor::wgpu::wgpu::DeviceType::Cpu;
                let memory = MemoryLimits::of_wgpu(&setup.device, &setup.adapter);
                Ok((
                    device,
                    format!(
                        "GPU: {} via {:?}{}",
                        info.name,
                        setup.backend,
                        if software { " (software adapter)" } else { "" }
                    ),
                    software,
                    memory,
                ))
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the graphics driver panicked while creating the device".into()),
        }
    })
    .clone()
}

/// The CPU device.
pub fn cpu_device() -> ComputeDevice {
    // The threads flex's kernels run on: rayon's pool (RAYON_NUM_THREADS sets it), which is
    // not always the machine's core count.
    let threads = rayon::current_num_threads();
    ComputeDevice {
        device: Device::flex(),
        is_gpu: false,
        description: format!(
            "CPU (flex, {threads} thread{})",
            if threads == 1 { "" } else { "s" }
        ),
        fallback_reason: None,
        software: false,
        memory: MemoryLimits::cpu(),
    }
}

/// Why the CPU is chosen over a software adapter named `adapter` (the app and the command
/// line decide by this one rule).
pub fn software_adapter_reason(adapter: &str) -> String {
    format!("the adapter ({adapter}) is a software renderer; the CPU backend is faster")
}

/// The device descriptor a display asks for when burn is to compute on its device: the
/// adapter's own limits and features (as burn's wgpu runtime requests them).
pub fn shared_device_descriptor(adapter: &wgpu::Adapter) -> wgpu::DeviceDescriptor<'static> {
    wgpu::DeviceDescriptor {
        label: Some("unet-studio device"),
        required_features: adapter
            .features()
            .difference(wgpu::Features::MAPPABLE_PRIMARY_BUFFERS),
        required_limits: adapter.limits(),
        ..Default::default()
    }
}

/// A wgpu device created by someone else (the display), with what burn needs to use it.
#[derive(Clone, Debug)]
pub struct WgpuParts {
    /// The instance.
    pub instance: wgpu::Instance,
    /// The adapter.
    pub adapter: wgpu::Adapter,
    /// The device.
    pub device: wgpu::Device,
    /// Its queue.
    pub queue: wgpu::Queue,
}

/// burn on a wgpu device another part of the program created (eframe's, so that training,
/// prediction and drawing share one device and its buffers); the CPU, with the reason, when
/// burn refuses it or the adapter is a software one (lavapipe, llvmpipe) and
/// `allow_software` is false: burn's CPU backend is much faster than a GPU emulated on the
/// CPU.
pub fn share_wgpu(parts: WgpuParts, allow_software: bool) -> ComputeDevice {
    let info = parts.adapter.get_info();
    let software = info.device_type == wgpu::DeviceType::Cpu;
    if software && !allow_software {
        let mut cpu = cpu_device();
        cpu.fallback_reason = Some(software_adapter_reason(&info.name));
        return cpu;
    }
    let memory = MemoryLimits::of_wgpu(&parts.device, &parts.adapter);
    let setup = burn::tensor::wgpu::WgpuSetup {
        instance: parts.instance,
        adapter: parts.adapter,
        device: parts.device,
        queue: parts.queue,
        backend: info.backend,
    };
    let init = std::panic::AssertUnwindSafe(|| Device::wgpu_options().setup(setup).init());
    let fallback = |reason: String| {
        let mut cpu = cpu_device();
        cpu.fallback_reason = Some(reason);
        cpu
    };
    match std::panic::catch_unwind(init) {
        Ok(Ok(device)) => ComputeDevice {
            device,
            is_gpu: true,
            description: format!(
                "GPU: {} via {:?} (shared with the display)",
                info.name, info.backend
            ),
            fallback_reason: None,
            software,
            memory,
        },
        Ok(Err(e)) => fallback(format!("the display's GPU was refused by burn: {e}")),
        Err(_) => fallback("initialising burn on the display's GPU failed".into()),
    }
}

/// Resolves a [`DeviceChoice`].
pub fn select_device(choice: DeviceChoice) -> Result<ComputeDevice, DeviceError> {
    match choice {
        DeviceChoice::Cpu => Ok(cpu_device()),
        DeviceChoice::Gpu => {
            let (device, description, software, memory) = gpu().map_err(DeviceError::NoAdapter)?;
            Ok(ComputeDevice {
                device,
                is_gpu: true,
                description,
                fallback_reason: None,
                software,
                memory,
            })
        }
        DeviceChoice::Auto => match gpu() {
            Ok((_, description, true, _)) => {
                let mut cpu = cpu_device();
                cpu.fallback_reason = Some(software_adapter_reason(
                    description.trim_start_matches("GPU: "),
                ));
                Ok(cpu)
            }
            Ok((device, description, software, memory)) => Ok(ComputeDevice {
                device,
                is_gpu: true,
                description,
                fallback_reason: None,
                software,
                memory,
            }),
            Err(reason) => {
                let mut cpu = cpu_device();
                cpu.fallback_reason = Some(format!("no GPU adapter ({reason})"));
                Ok(cpu)
            }
        },
    }
}
