//! Choosing where tensors live, at run time, as the tutorial's
//! `"cuda" if torch.cuda.is_available() else "cpu"` does.

use std::fmt;
use std::str::FromStr;
use std::sync::Once;

use burn::tensor::Device;

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The best device this build can open.
    #[default]
    Auto,
    /// The CPU, through Burn's pure-Rust `flex` backend.
    Cpu,
}

/// A device that is ready, and why it was chosen.
#[derive(Debug, Clone)]
pub struct SelectedDevice {
    pub device: Device,
    /// Short name, as the tutorial prints it: `cpu`.
    pub name: &'static str,
    /// Why this one, in words.
    pub reason: String,
}

/// A device name that digits does not know.
#[derive(Debug, thiserror::Error)]
#[error("unknown device '{0}': expected auto or cpu (GPU backends are not built in)")]
pub struct UnknownDevice(pub String);

impl FromStr for DeviceChoice {
    type Err = UnknownDevice;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            other => Err(UnknownDevice(other.to_string())),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceChoice::Auto => "auto",
            DeviceChoice::Cpu => "cpu",
        })
    }
}

impl DeviceChoice {
    /// Opens the device. This build has no GPU backend, so `auto` resolves to the CPU and says
    /// so; the choice is made here, at run time, so GPU backends can join without callers
    /// changing.
    pub fn select(self) -> SelectedDevice {
        let reason = match self {
            DeviceChoice::Auto => "no GPU backend in this build".to_string(),
            DeviceChoice::Cpu => "requested".to_string(),
        };
        SelectedDevice {
            device: Device::flex(),
            name: "cpu",
            reason,
        }
    }
}

/// Makes the CPU treat subnormal floats as zero, on this thread and on Burn's worker threads.
///
/// Adam keeps decaying the moments of weights whose gradient is always zero (the weights of
/// MNIST's blank border pixels, dead ReLU units) until they become subnormal, around the third
/// epoch of the tutorial; from then on every step ran five times slower on x86, whose
/// arithmetic on subnormals takes a slow path. Values below 1.2e-38 have no effect on training.
/// Cheap enough to call before every step: it costs two instructions after the first call.
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
