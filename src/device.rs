//! Choosing where tensors live, at run time, as the tutorial's
//! `"cuda" if torch.cuda.is_available() else "cpu"` does.

use std::sync::Once;

use burn::tensor::Device;

use crate::choice::Choice;

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The best device this build can open: CUDA, then a hardware wgpu adapter, then the CPU.
    #[default]
    Auto,
    /// The CPU, through Burn's pure-Rust `flex` backend.
    Cpu,
    /// An NVIDIA GPU through CubeCL's CUDA runtime (cargo feature `cuda`).
    Cuda,
    /// Any Vulkan, Metal or DirectX adapter through wgpu (cargo feature `wgpu`), software
    /// renderers such as Mesa's lavapipe included.
    Wgpu,
}

/// A device that is ready, and why it was chosen.
#[derive(Debug, Clone)]
pub struct SelectedDevice {
    pub device: Device,
    /// Short name, as the tutorial prints it: `cpu`, `cuda` or `wgpu`.
    pub name: &'static str,
    /// Why this one, and which hardware, in words.
    pub reason: String,
}

/// A device that was asked for by name and cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeviceError {
    #[error(
        "this build of digits has no {backend} support: rebuild it with `--features {feature}`"
    )]
    NotBuilt {
        backend: &'static str,
        feature: &'static str,
    },
    #[error("no usable {backend} device: {why}")]
    Unavailable { backend: &'static str, why: String },
}

impl Choice for DeviceChoice {
    const KIND: &'static str = "device";
    const ALL: &'static [Self] = &[Self::Auto, Self::Cpu, Self::Cuda, Self::Wgpu];

    fn name(self) -> &'static str {
        match self {
            DeviceChoice::Auto => "auto",
            DeviceChoice::Cpu => "cpu",
            DeviceChoice::Cuda => "cuda",
            DeviceChoice::Wgpu => "wgpu",
        }
    }
}

impl DeviceChoice {
    /// Opens the device, deciding at run time as the tutorial does: a GPU backend that is not
    /// built in, or built in but finds no hardware, is an error when named and a fallback
    /// under `auto`, never a panic.
    pub fn select(self) -> Result<SelectedDevice, DeviceError> {
        match self {
            DeviceChoice::Cpu => Ok(cpu("requested".to_string())),
            DeviceChoice::Cuda => open_cuda(),
            DeviceChoice::Wgpu => open_wgpu(),
            DeviceChoice::Auto => Ok(auto()),
        }
    }
}

fn cpu(reason: String) -> SelectedDevice {
    SelectedDevice {
        device: Device::flex(),
        name: "cpu",
        reason,
    }
}

/// CUDA, else a wgpu adapter that is real hardware, else the CPU, with the reason each GPU
/// backend was passed over. A software wgpu adapter is passed over because Burn's CPU backend
/// runs the same work several times faster than a GPU emulated on the CPU; it is judged from
/// the adapter list, without opening it, so that `auto` stays quick on such machines.
fn auto() -> SelectedDevice {
    let cuda = match open_cuda() {
        Ok(selected) => return selected,
        Err(err) => err,
    };
    let wgpu = match hardware_wgpu_adapter().and_then(|()| open_wgpu()) {
        Ok(selected) => return selected,
        Err(err) => err,
    };
    cpu(match (&cuda, &wgpu) {
        (DeviceError::NotBuilt { .. }, DeviceError::NotBuilt { .. }) => {
            "no GPU backend in this build".to_string()
        }
        _ => format!("{}; {}", passed_over(&cuda), passed_over(&wgpu)),
    })
}

/// Why `auto` did not take a backend, in a few words.
fn passed_over(err: &DeviceError) -> String {
    match err {
        DeviceError::NotBuilt { backend, .. } => format!("{backend}: not built in"),
        DeviceError::Unavailable { backend, why } => format!("{backend}: {why}"),
    }
}

#[cfg(feature = "cuda")]
fn open_cuda() -> Result<SelectedDevice, DeviceError> {
    use burn::tensor::DeviceType;
    use std::sync::OnceLock;

    static OPENED: OnceLock<Result<SelectedDevice, DeviceError>> = OnceLock::new();
    OPENED
        .get_or_init(|| {
            let unavailable = |why: String| DeviceError::Unavailable {
                backend: "CUDA",
                why,
            };
            // Listing asks whether the driver library loads before touching it, so a machine
            // without NVIDIA's driver answers "none" here instead of panicking.
            if Device::enumerate(DeviceType::Cuda).into_vec().is_empty() {
                return Err(unavailable(
                    "the NVIDIA driver (libcuda) is not installed or sees no GPU".to_string(),
                ));
            }
            let device = Device::cuda(0);
            smoke_test(&device).map_err(unavailable)?;
            let gpu = device
                .identity()
                .map_or_else(|| "GPU 0".to_string(), |identity| identity.name.to_string());
            Ok(SelectedDevice {
                device,
                name: "cuda",
                reason: format!("{gpu}, the first CUDA device"),
            })
        })
        .clone()
}

#[cfg(not(feature = "cuda"))]
fn open_cuda() -> Result<SelectedDevice, DeviceError> {
    Err(DeviceError::NotBuilt {
        backend: "CUDA",
        feature: "cuda",
    })
}

#[cfg(feature = "wgpu")]
fn open_wgpu() -> Result<SelectedDevice, DeviceError> {
    use std::sync::OnceLock;

    // wgpu's runtime can be set up once per process; later calls reuse that answer.
    static OPENED: OnceLock<Result<SelectedDevice, DeviceError>> = OnceLock::new();
    OPENED
        .get_or_init(|| {
            let (device, setup) = Device::wgpu_options()
                .init_with_setup()
                .map_err(|err| wgpu_unavailable(err.to_string()))?;
            smoke_test(&device).map_err(wgpu_unavailable)?;
            let info = setup.adapter.get_info();
            Ok(SelectedDevice {
                device,
                name: "wgpu",
                reason: format!("{} on {:?}, the default adapter", info.name, info.backend),
            })
        })
        .clone()
}

/// `Ok` when some wgpu adapter is a GPU rather than a software renderer.
#[cfg(feature = "wgpu")]
fn hardware_wgpu_adapter() -> Result<(), DeviceError> {
    use burn::tensor::wgpu::wgpu;

    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapters: Vec<_> =
        futures_lite::future::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
            .iter()
            .map(wgpu::Adapter::get_info)
            .collect();
    match adapters
        .iter()
        .find(|info| info.device_type != wgpu::DeviceType::Cpu)
    {
        Some(_) => Ok(()),
        None => Err(wgpu_unavailable(match adapters.first() {
            Some(software) => format!(
                "{} emulates a GPU on the CPU, slower than the CPU backend",
                software.name
            ),
            None => "no Vulkan, Metal or DirectX adapter".to_string(),
        })),
    }
}

#[cfg(feature = "wgpu")]
fn wgpu_unavailable(why: String) -> DeviceError {
    DeviceError::Unavailable {
        backend: "wgpu",
        why,
    }
}

#[cfg(not(feature = "wgpu"))]
fn open_wgpu() -> Result<SelectedDevice, DeviceError> {
    Err(wgpu_not_built())
}

#[cfg(not(feature = "wgpu"))]
fn hardware_wgpu_adapter() -> Result<(), DeviceError> {
    Err(wgpu_not_built())
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_not_built() -> DeviceError {
    DeviceError::NotBuilt {
        backend: "wgpu",
        feature: "wgpu",
    }
}

/// Runs one small kernel on a freshly opened GPU device and reads its result back. Opening is
/// lazy: a missing NVRTC library or a driver too old for the kernels only shows when the first
/// kernel compiles. The runtime reports a kernel that fails to compile or run as an error of
/// the read; what it still reports by panicking (a library that cannot be loaded) is caught.
/// Either becomes the reason. The panic hook is the process's and stays as it is, so such a
/// panic is printed by it as well.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn smoke_test(device: &Device) -> Result<(), String> {
    use burn::tensor::Tensor;

    let outcome = std::panic::catch_unwind(|| {
        Tensor::<1>::from_floats([1.0, 2.0, 3.0], device)
            .mul_scalar(2.0)
            .sum()
            .try_into_scalar::<f32>()
    });
    match outcome {
        Ok(Ok(12.0)) => Ok(()),
        Ok(Ok(sum)) => Err(format!("a test kernel computed {sum} instead of 12")),
        Ok(Err(err)) => Err(err.to_string()),
        Err(panic) => Err(panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "the device failed its first kernel".to_string())),
    }
}

/// Makes the CPU treat subnormal floats as zero, on this thread and on the threads of rayon's
/// global pool (Burn's CPU workers): a choice for the whole process, so the library never makes
/// it; the program that owns the process does (`digits train`, `compare` and `bench` do, before
/// anything else).
///
/// It is for speed. Adam keeps decaying the moments of weights whose gradient has been zero for
/// hundreds of steps (the weights of MNIST's blank border pixels, dead ReLU units) until they
/// become subnormal; x86 computes on subnormals through a slow path, and the tutorial's epochs
/// from then on took several times as long (PERFORMANCE.md). What it changes: any result below
/// 1.2e-38 becomes 0, and such inputs are read as 0, where IEEE arithmetic would keep them;
/// values that small have no effect on training. Threads started later (another rayon pool)
/// keep the default. It does nothing on other architectures.
pub fn flush_subnormals_to_zero() {
    static WORKERS: Once = Once::new();
    set_flush_to_zero();
    WORKERS.call_once(|| {
        rayon::broadcast(|_| set_flush_to_zero());
    });
}

#[cfg(target_arch = "x86_64")]
fn set_flush_to_zero() {
    /// MXCSR's flush-to-zero (results) and denormals-are-zero (inputs) bits.
    const FTZ_DAZ: u32 = 0x8040;
    #[allow(deprecated)] // the replacement the deprecation suggests is inline assembly
    // SAFETY: only the FTZ and DAZ bits change; SSE is always present on x86_64.
    unsafe {
        use std::arch::x86_64::{_mm_getcsr, _mm_setcsr};
        _mm_setcsr(_mm_getcsr() | FTZ_DAZ);
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn set_flush_to_zero() {}
