//! Plain CPU kernels of the U-Net's layers, free of burn: slices of `f32` in NCHW layout in,
//! slices out. [`crate::ml::ops`] wraps them as operations of burn's `flex` backend.
//!
//! - [`conv3x3`]: the 3x3 valid convolution and its gradients, by the kernel that
//!   [`dispatch`] picks at run time: [`gemm`] (im2col + GEMM, every CPU), [`avx512`] and
//!   [`avx512_grad`] (direct kernels), [`winograd`] (F(2x2, 3x3), AVX-512), [`avx2`] (direct
//!   kernels for CPUs without AVX-512), [`avx512_gemm`] (unpacked products on small maps);
//! - [`upconv`], [`pool`], [`crop`], [`relu`], [`cross_entropy`], [`sgd`]: the other layers,
//!   the loss and the optimiser step;
//! - [`common`]: shapes and buffers they share.
//!
//! Every kernel is tested against a slow implementation of its definition
//! (`reference`, test builds only).

#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "x86_64")]
pub mod avx512;
#[cfg(target_arch = "x86_64")]
pub mod avx512_gemm;
#[cfg(target_arch = "x86_64")]
pub mod avx512_grad;
pub mod common;
pub mod conv3x3;
pub mod crop;
pub mod cross_entropy;
pub mod dispatch;
pub mod dropout;
pub mod gemm;
pub mod pool;
#[cfg(test)]
mod reference;
pub mod relu;
pub mod sgd;
pub mod upconv;
#[cfg(target_arch = "x86_64")]
pub mod winograd;
