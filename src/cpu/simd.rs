//! Loops compiled for the processor they run on. The crate is built for x86-64's baseline
//! (SSE2); the engine's hot loops are written once and compiled a second time for AVX2 and
//! FMA, taken at run time where the processor has them.

/// Whether the portable build of a [`with_avx2`] function may fuse multiply-adds: every
/// aarch64 processor can, while x86-64's baseline (SSE2) cannot, and asking for one there
/// calls a slow software routine.
pub(crate) const FUSED_PORTABLY: bool = cfg!(target_arch = "aarch64");

/// Defines a function whose body is compiled twice: for AVX2 and FMA, taken at run time where
/// the processor has them, and for the baseline otherwise. On the baseline the loops over
/// channels of batch norm and pooling stay scalar (the compiler vectorizes floats selected by
/// a byte compare only with AVX2), and Adam's update runs 4 values wide instead of 8. A
/// closure takes the target features of the function it is written in, so the body, closures
/// and all, is repeated rather than called. The arithmetic is the same in both (no
/// multiply-add is fused unless asked), except in a body given `fused NAME;`: there the
/// constant `NAME` says whether [`multiply_add`] may fuse.
macro_rules! with_avx2 {
    (
        fused $fused:ident;
        $(#[$meta:meta])*
        $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block
    ) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    const $fused: bool = true;
                    $body
                }
                // SAFETY: the processor has AVX2 and FMA, as just checked.
                return unsafe { avx2($($arg),*) };
            }
            fn portable($($arg: $ty),*) $(-> $ret)? {
                const $fused: bool = $crate::cpu::simd::FUSED_PORTABLY;
                $body
            }
            portable($($arg),*)
        }
    };
    ($(#[$meta:meta])* $vis:vis fn $($rest:tt)*) => {
        with_avx2! { fused _UNFUSED; $(#[$meta])* $vis fn $($rest)* }
    };
}
pub(crate) use with_avx2;

/// `x * w + s`, rounded once with `FUSED`: where the processor has the instruction (see
/// [`with_avx2`]).
#[inline(always)]
pub(crate) fn multiply_add<const FUSED: bool>(x: f32, w: f32, s: f32) -> f32 {
    if FUSED { x.mul_add(w, s) } else { x * w + s }
}
