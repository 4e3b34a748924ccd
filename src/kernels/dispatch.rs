//! Which kernel computes a convolution: the one a caller names (tests and benches compare
//! them), or the fastest for the shape on this CPU, decided at run time from its instruction
//! set ([`Isa`]) and from the per-shape measurements quoted at each rule. `UNET_STUDIO_CONV`
//! overrides the choice to measure one kernel set against another in the same run.

use super::common::ConvShape;

/// Whether the direct AVX-512 kernel by rows of [`super::avx512`] runs the forward pass
/// of a convolution of this shape (also the input gradient, as the forward pass of its
/// transposed shape) on a CPU that has it: the reduction is short or the rows are long. Measured
/// per layer of both presets (`cargo bench --bench conv_layers`, and the paper net's layers):
/// up to 64 input channels the direct kernels ran at 390-490 GF/s against 200-350 for
/// im2col + GEMM; with 128-256 channels they win on maps at least 128 px wide (380-490 GF/s
/// against 300-430) and lose on narrower ones; from 512 channels GEMM wins.
pub(crate) fn direct(s: &ConvShape) -> bool {
    s.cin <= 64 || (s.cin <= 256 && s.w >= 130)
}

/// Whether the flattened-rows kernel runs a convolution of this shape (padded by `pad`): rows
/// up to 128 px (padded), where the row kernel's blocks of 48 pixels are partly empty at each
/// row's end and im2col + GEMM has too few pixels to amortise its packing, with up to 512
/// input channels (with 1024 the weights of each pixel block no longer stay in the caches).
/// Measured per layer of both presets (`cargo bench --bench conv_layers [-- 252 | paper]`):
/// lite 572 px, maps 56-104 px, forward 350-370 -> 430-470 GF/s; lite 252 px, maps 16-60 px,
/// 150-290 -> 300-450 GF/s; the paper net's 512 channels on 54-104 px 400 -> 480-500 GF/s.
/// Wider rows stay with the row kernel (the flat one lost up to 20 % on 16 channels x 570 px
/// there, its padded copy the most on input gradients).
fn narrow(s: &ConvShape, pad: usize) -> bool {
    s.w + 2 * pad <= 128 && s.cin <= 512
}

/// Whether Winograd's F(2x2, 3x3) ([`super::winograd`]) runs the forward pass of a
/// convolution of this shape padded by `pad` (also the input gradient, as the forward pass of
/// its transposed shape) on a CPU with AVX-512: 16 or more input channels, outputs at least
/// 56 px wide, and at most 128 x 128 channel pairs (their transformed weights, 1 MB, stay in
/// the L2 cache while every group of tiles reads them). Measured per layer against the direct
/// kernels (Xeon, 2 threads, best of 40 alternated runs): 16 -> 16 channels on 250 px 1.34 ->
/// 1.00 ms, 16 -> 32 on 124 px 0.69 -> 0.46, 32 -> 32 on 122 px 1.25 -> 0.98, 16 -> 16 on 570
/// px 6.1 -> 5.0, 32 -> 32 on 282 px 5.3 -> 4.1, 64 -> 64 on 138 px 5.3 -> 4.2, 128 -> 128 on
/// 66 px 5.5 -> 4.4; even on 70-72 px with 16 output channels and on 58 px, and 1.4-4x slower
/// on the deep levels' 24-40 px maps (few tile rows to share out, and the weights'
/// transformation no longer amortised). The paper net's layers (`conv_layers -- paper`, one
/// run each): 64 -> 64 channels on 570 px 141.6 -> 87.5 ms, on 390 px 74.8 -> 46.7, 128 -> 128
/// on 282 px 115.3 -> 101.9, 128 -> 64 on 392 px 126.8 -> 103.8; with 256 channels or more
/// slower (256 -> 256 on 138 px 115.1 -> 141.5, 512 -> 512 on 66 px 81.5 -> 132.4: every
/// group of 32 tiles reads all of their transformed weights, 4-16 MB).
fn winograd(s: &ConvShape, pad: usize) -> bool {
    s.cin >= 16 && s.cin * s.cout <= 128 * 128 && s.w + 2 * pad >= 58
}

/// Whether the direct kernel computes the weight gradient of this shape: few channels, or a
/// map of at least 30 x 30 output pixels (there it beat GEMM by 1.1-2.3x on every layer of
/// both presets, e.g. the paper net's 512 -> 512 channels on 64 px: 92 -> 40 ms); on smaller
/// maps the GEMM of [`conv3x3_weight_grad`]'s tiny-map form is faster.
fn direct_weight_grad(s: &ConvShape) -> bool {
    let small_channels = s.cin <= 32 || (s.cin <= 64 && s.cout <= 64);
    small_channels || s.ho() * s.wo() >= 30 * 30
}

/// Which kernel a caller asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Request {
    /// The fastest for the shape on this CPU (see [`fastest_forward`], [`fastest_weight_grad`]).
    Fastest,
    /// This kernel where the CPU has it, else im2col + GEMM (tests and benches compare the
    /// kernels).
    #[cfg_attr(not(test), allow(dead_code))]
    Only(Kernel),
}

/// The kernel that computes a convolution (or, padded, an input gradient).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// im2col + GEMM.
    Gemm,
    /// The direct kernel by output rows ([`super::avx512::forward_into`]).
    Rows,
    /// The direct kernel over flattened rows ([`super::avx512::forward_flat_into`]).
    Flat,
    /// The direct AVX2 kernels ([`super::avx2`]).
    Avx2,
    /// The weight gradient by vectors of output channels
    /// ([`super::avx512_grad::weight_grad_channels`]).
    Channels,
    /// Winograd's F(2x2, 3x3) ([`super::winograd::forward_into`]).
    Winograd,
}

/// The direct kernels a CPU has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    /// AVX-512F: [`super::avx512`].
    Avx512,
    /// AVX2 and FMA: [`super::avx2`].
    Avx2,
    /// None: im2col + GEMM only.
    Neither,
}

impl Isa {
    /// The direct kernels of this CPU (the AVX-512 ones where both exist).
    pub(crate) fn here() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if super::avx512::available() && !avx2_forced() {
                return Self::Avx512;
            }
            if super::avx2::available() {
                return Self::Avx2;
            }
        }
        Self::Neither
    }
}

/// The kernel set that `UNET_STUDIO_CONV` asks for, to measure one against another in the same
/// run (`cargo bench --bench conv_layers`, `unet-studio bench`): `gemm` im2col + GEMM
/// everywhere, `avx2` the AVX2 kernels (and their choice per shape) on a CPU that also has
/// AVX-512, `direct` the direct kernels where Winograd's would run; anything else (or unset)
/// the fastest this CPU has.
fn conv_override() -> &'static str {
    static CHOICE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    CHOICE.get_or_init(|| std::env::var("UNET_STUDIO_CONV").unwrap_or_default())
}

/// Whether `UNET_STUDIO_CONV=gemm` forces im2col + GEMM ([`conv_override`]).
pub(crate) fn gemm_forced() -> bool {
    conv_override() == "gemm"
}

/// Whether `UNET_STUDIO_CONV=avx2` forces the AVX2 kernels ([`conv_override`]).
fn avx2_forced() -> bool {
    conv_override() == "avx2"
}

/// Whether `UNET_STUDIO_CONV=direct` leaves Winograd's kernel out ([`conv_override`]): the
/// direct kernels where they were chosen before it.
fn winograd_excluded() -> bool {
    conv_override() == "direct"
}

/// The kernel `request` names (im2col + GEMM where the CPU lacks it), or for
/// [`Request::Fastest`] the one `fastest` picks for the shape on this CPU's direct kernels.
pub(crate) fn chosen(request: Request, fastest: impl FnOnce(Isa) -> Kernel) -> Kernel {
    let isa = Isa::here();
    match (request, isa) {
        (Request::Only(Kernel::Avx2), Isa::Avx512 | Isa::Avx2) => Kernel::Avx2,
        (
            Request::Only(k @ (Kernel::Rows | Kernel::Flat | Kernel::Channels | Kernel::Winograd)),
            Isa::Avx512,
        ) => k,
        (Request::Fastest, Isa::Avx512 | Isa::Avx2) if !gemm_forced() => fastest(isa),
        _ => Kernel::Gemm,
    }
}

/// The fastest kernel for a convolution of shape `s` padded by `pad` (see [`narrow`] and
/// [`direct`]; with AVX2, [`direct_avx2`]).
pub(crate) fn fastest_forward(s: &ConvShape, pad: usize, isa: Isa) -> Kernel {
    if isa == Isa::Avx2 {
        return if direct_avx2(s, pad) {
            Kernel::Avx2
        } else {
            Kernel::Gemm
        };
    }
    if winograd(s, pad) && !winograd_excluded() {
        Kernel::Winograd
    } else if narrow(s, pad) {
        Kernel::Flat
    } else if direct(s) {
        Kernel::Rows
    } else {
        Kernel::Gemm
    }
}

/// The fastest kernel for the weight gradient of a convolution of shape `s`: over flattened
/// rows on narrow maps of at least 20 x 20 outputs (lite 252 px: 22-28 px maps 180-230 ->
/// 260-330 GF/s; lite 572 px: 54-104 px maps 370-440 -> 410-450), the row kernel or GEMM as
/// [`direct_weight_grad`] says otherwise (on maps of 10-16 px the flat kernel's 27 sums per
/// channel pair, reduced across lanes, cost more than its multiplications). With AVX2,
/// [`direct_avx2_weight_grad`].
pub(crate) fn fastest_weight_grad(s: &ConvShape, isa: Isa) -> Kernel {
    if isa == Isa::Avx2 {
        return if direct_avx2_weight_grad(s) {
            Kernel::Avx2
        } else {
            Kernel::Gemm
        };
    }
    if by_channels(s) {
        Kernel::Channels
    } else if narrow(s, 0) && s.ho() * s.wo() >= 20 * 20 {
        Kernel::Flat
    } else if direct_weight_grad(s) {
        Kernel::Rows
    } else {
        Kernel::Gemm
    }
}

/// Output maps of more pixels than this take [`super::avx512_grad::weight_grad_channels`] by
/// parts of the map, each task transposing its own bands of the output gradient: a
/// pixel-major copy of the whole of it (10-80 MB on the top levels) went through memory.
pub(crate) const LOCAL_PLANE: usize = 128 * 128;

/// Whether the weight gradient of this shape is computed by vectors of output channels
/// ([`super::avx512_grad::weight_grad_channels`]): at least 32 output channels on more than
/// 8 x 8 outputs, with at least 32 input channels, or 16 on a map that the kernel takes by
/// parts (more than [`LOCAL_PLANE`] outputs). Measured per layer against the kernels chosen
/// before (`cargo bench --bench conv_layers [-- 252 | paper]`, Xeon with AVX-512, 2
/// threads, alternated runs): lite 572 px, 64-256 channels on 30-104 px 124-177
/// -> 172-213 GF/s, 16-64 channels on 138-284 px 161-184 -> 198-244; lite 252 px, 32-256
/// channels on 12-60 px 87-162 -> 120-240; paper, 64-256 channels on 138-570 px 122-183 ->
/// 209-261 (its weight gradients in all 1696 -> 1405 ms). It lost with 16 input channels on
/// 124 px (16 -> 32: 113 against 128), with one input channel (46 against 79) and on 8 x 8
/// outputs (256 channels: 101-104 against 122-133, the unpacked GEMM); with 16 output
/// channels its vectors would be half empty.
fn by_channels(s: &ConvShape) -> bool {
    let plane = s.ho() * s.wo();
    s.cout >= 32 && plane > 8 * 8 && (s.cin >= 32 || (s.cin >= 16 && plane > LOCAL_PLANE))
}

/// Whether the direct AVX2 kernel runs the forward pass of a convolution of this shape padded
/// by `pad` (the input gradient: the forward pass of its transposed shape padded by 2) on a
/// CPU without AVX-512: up to 64 input channels, or up to 256 on maps of at least 16 px or
/// padded. Measured per layer against im2col + GEMM in the same runs (`cargo bench --bench
/// conv_layers [-- 252 | paper]`, then with `UNET_STUDIO_CONV=gemm`; Zen 3, 2 threads, GEMM
/// 175-185 GF/s): lite 572 px forward 118 against 150 ms in all, 16-64 channels 128-179
/// against 94-158 GF/s; input gradients 136 against 157 ms; lite 252 px forward 14.1
/// against 17.2 ms, input gradients 16.2 against 20.6 (the deep levels' 8-12 px maps too:
/// GEMM's im2col of a map padded by 2 is mostly zeros). GEMM won the forward pass of 128-256
/// channels on 10-14 px maps (80-100 against 124-138 GF/s) and of 512-1024 channels (the
/// paper net's deep levels: 90-124 against 150-165).
fn direct_avx2(s: &ConvShape, pad: usize) -> bool {
    s.cin <= 64 || (s.cin <= 256 && (pad > 0 || s.w >= 16))
}

/// Whether the direct AVX2 kernel computes the weight gradient of this shape on a CPU without
/// AVX-512: from 2 input channels, with up to 64, or on maps of at least 20 px with up to 1024
/// channels in all, or on maps of at least 48 px. Measured as [`direct_avx2`]: lite 572 px
/// 113 against 124 ms in all (16-256 channels on 30-570 px 133-180 against 124-170 GF/s),
/// lite 252 px 16-128 channels on 22-250 px 112-161 against 91-156, paper 1705 against 2040 ms
/// (512-1024 channels on 54-56 px 172-176 against 119-121). GEMM's `dY . col^T` won on a
/// single input channel (the first layer: 24-33 against 58-70 GF/s; its 9 pairs fill two
/// register blocks of 6), with 128-256 channels on the deep levels' 10-16 px maps (85-129
/// against 125-141: the two transpositions cost as much as the products) and with 1536-2048
/// channels on 30-32 px (99-156 against 151-174: a chunk of their pixels no longer fits the
/// L2 cache).
fn direct_avx2_weight_grad(s: &ConvShape) -> bool {
    s.cin >= 2 && (s.cin <= 64 || (s.h >= 20 && s.cin + s.cout <= 1024) || s.h >= 48)
}

/// Whether, on a CPU with AVX2 but not AVX-512, the input gradient of this shape is computed
/// as `dcol = W^T . dY` by the GEMM and added into place (col2im) rather than as the
/// convolution of `dY` padded by 2: on the deep levels' maps of up to 16 x 16 outputs with at
/// least 128 output channels, where the padded convolution computes 1.5-2.5x the products
/// (10 x 10 outputs from 8 x 8).
pub(crate) fn col2im_avx2(s: &ConvShape) -> bool {
    s.ho() * s.wo() <= 16 * 16 && s.cout >= 128
}

/// `fn $name(args) -> R` calls `$body(args)` (an `#[inline(always)]` function) compiled for
/// AVX-512 where the CPU has it, else for AVX2 + FMA where it has those: element-wise loops
/// (the ReLU and pooling kernels) vectorise 16 or 8 wide instead of the baseline target's
/// scalar or 4-wide code (the ReLU gradient's loop ran scalar: ~5 % of a lite 252 px training
/// step).
macro_rules! wide {
    ($name:ident = $body:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {
        fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                match $crate::kernels::dispatch::Isa::here() {
                    // SAFETY: the CPU has AVX-512F (checked).
                    $crate::kernels::dispatch::Isa::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: the CPU has AVX2 and FMA (checked).
                    $crate::kernels::dispatch::Isa::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::kernels::dispatch::Isa::Neither => {}
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use wide;
