//! The arithmetic of each layer kind, forward and backward, over flat `f32` buffers.
//!
//! Feature maps are kept channels-last (`[N, H, W, C]`): a convolution's input patch is then
//! `kernel` runs of `kernel * C` contiguous values, its output is the GEMM's output as it
//! stands, and batch norm, activations and pooling sweep whole rows of channels. Work is split
//! over images (or rows) with rayon, each piece writing its own slice. Training and inference
//! give the same bits whatever the number of threads, on any x86-64 processor with AVX2 or
//! AVX-512: sums are taken over fixed blocks in a fixed order, the GEMM's included
//! ([`gemm_into`]), whose AVX-512 kernels run where the processor has them.

use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use rayon::prelude::*;

use super::simd::{multiply_add, with_avx2};

/// Element-wise passes are split into pieces of at least this many values: below it a thread
/// hand-off costs more than the pass.
const PARALLEL_PIECE: usize = 1 << 15;

/// `c[m×n] = a[m×k] · b[k×n]`, each matrix given with its row and column strides.
pub(crate) fn gemm(
    dims @ [m, _, n]: [usize; 3],
    a: (&[f32], usize, usize),
    b: (&[f32], usize, usize),
    c: &mut [f32],
) {
    assert!(c.len() >= m * n);
    // SAFETY: `c` holds the `m` rows of `n` values, and, borrowed mutably, cannot alias `a`
    // or `b`.
    unsafe { gemm_into(dims, a, b, c.as_mut_ptr(), n) }
}

/// The number of terms each of a product's sums takes at a time: each block's terms are
/// added in order, then the blocks in order.
const DEPTH_BLOCK: usize = 512;

/// [`gemm`] into `n` columns of a wider matrix: row `i` of the product goes to the `n`
/// values from `c + i * c_row_stride`.
///
/// Every value of the product is the same sum on any x86 processor, with AVX2 or AVX-512, on
/// any number of threads: blocks of [`DEPTH_BLOCK`] terms from the first, each added in order
/// with fused multiply-adds, then the blocks in order. Left to itself the GEMM crate would size
/// the blocks from the cache sizes it reads off the machine, and it sums small products (at most
/// 256 values, both operands contiguous along the sum) and matrix-vector products across vector
/// lanes, an order that depends on the vector width. So the depth is cut into blocks here, and
/// those shapes are handed over as the ones its main kernels take: a one-row or one-column
/// operand padded to two with zeros, a small product's left operand copied column by column.
///
/// # Safety
/// Those values must be writable and untouched by any other thread during the call, and
/// must not overlap `a` or `b`.
pub(crate) unsafe fn gemm_into(
    [m, k, n]: [usize; 3],
    (a, a_rows, a_cols): (&[f32], usize, usize),
    (b, b_rows, b_cols): (&[f32], usize, usize),
    c: *mut f32,
    c_row_stride: usize,
) {
    assert!(m == 0 || k == 0 || a.len() > (m - 1) * a_rows + (k - 1) * a_cols);
    assert!(k == 0 || n == 0 || b.len() > (k - 1) * b_rows + (n - 1) * b_cols);
    if m == 0 || n == 0 {
        return;
    }
    let lane_summed = a_cols == 1 && b_rows == 1 && m * n <= 256;
    if m == 1 || n == 1 || lane_summed {
        let (padded_m, padded_n) = (m.max(2), n.max(2));
        let mut a_by_columns: Vec<f32>;
        let a = if m == 1 || lane_summed {
            a_by_columns = vec![0.0; k * padded_m];
            for (depth, column) in a_by_columns.chunks_exact_mut(padded_m).enumerate() {
                for (row, value) in column[..m].iter_mut().enumerate() {
                    *value = a[row * a_rows + depth * a_cols];
                }
            }
            (&a_by_columns[..], 1, padded_m)
        } else {
            (a, a_rows, a_cols)
        };
        let mut b_by_rows: Vec<f32>;
        let b = if n == 1 {
            b_by_rows = vec![0.0; k * padded_n];
            for (depth, row) in b_by_rows.chunks_exact_mut(padded_n).enumerate() {
                row[0] = b[depth * b_rows];
            }
            (&b_by_rows[..], padded_n, 1)
        } else {
            (b, b_rows, b_cols)
        };
        let mut padded = vec![0.0; padded_m * padded_n];
        // SAFETY: `padded` is this call's own buffer of `padded_m` rows of `padded_n` values.
        unsafe { gemm_blocks([padded_m, k, padded_n], a, b, padded.as_mut_ptr(), padded_n) };
        for (row, values) in padded.chunks_exact(padded_n).take(m).enumerate() {
            // SAFETY: row `row < m` of `c` holds `n` values, as the caller vouches.
            unsafe {
                std::ptr::copy_nonoverlapping(values.as_ptr(), c.add(row * c_row_stride), n);
            }
        }
        return;
    }
    // SAFETY: the caller vouches for `c`; the asserts above for `a` and `b`.
    unsafe {
        gemm_blocks(
            [m, k, n],
            (a, a_rows, a_cols),
            (b, b_rows, b_cols),
            c,
            c_row_stride,
        )
    }
}

/// The GEMM crate's product, one call per block of [`DEPTH_BLOCK`] terms, each added to the
/// sum of the blocks before it. The callers have made sure the shape takes the crate's main
/// kernels, which keep one sum per value and add the terms to it in order.
///
/// # Safety
/// As [`gemm_into`]'s, and the strides must keep every element inside `a` and `b`.
unsafe fn gemm_blocks(
    [m, k, n]: [usize; 3],
    (a, a_rows, a_cols): (&[f32], usize, usize),
    (b, b_rows, b_cols): (&[f32], usize, usize),
    c: *mut f32,
    c_row_stride: usize,
) {
    let mut first = 0;
    loop {
        let depth = DEPTH_BLOCK.min(k - first);
        let read_c = first > 0;
        if depth <= 2 {
            // The crate fuses a sum of one or two terms into `c` itself, not as a block of its
            // own (a last block of 1 or 2 terms: k = 513, 1026, ...).
            for (i, j) in (0..m).flat_map(|i| (0..n).map(move |j| (i, j))) {
                let sum = (first..first + depth).fold(0.0f32, |sum, p| {
                    a[i * a_rows + p * a_cols].mul_add(b[p * b_rows + j * b_cols], sum)
                });
                // SAFETY: row `i < m`, column `j < n` of `c`, as the caller vouches.
                unsafe {
                    let value = c.add(i * c_row_stride + j);
                    *value = if read_c { *value + sum } else { sum };
                }
            }
        } else {
            // SAFETY: the block starts inside `a` and `b` and reaches no further than the whole
            // product would; the caller vouches for `c`. One thread per product: the callers split
            // the work over the cores themselves.
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    depth,
                    c,
                    1,
                    c_row_stride as isize,
                    read_c,
                    a.as_ptr().add(first * a_cols),
                    a_cols as isize,
                    a_rows as isize,
                    b.as_ptr().add(first * b_rows),
                    b_cols as isize,
                    b_rows as isize,
                    if read_c { 1.0 } else { 0.0 },
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        }
        first += depth;
        if first >= k {
            break;
        }
    }
}

/// How many images each thread takes: the batch split evenly over rayon's threads, or all of
/// them when the caller already runs on one of those threads (inference splits its batch
/// once, at the top, and each piece then runs every layer on its own thread).
pub(crate) fn images_per_thread(images: usize) -> usize {
    if rayon::current_thread_index().is_some() {
        return images.max(1);
    }
    images.div_ceil(rayon::current_num_threads()).max(1)
}

/// `out[i] = f(input[i])`, in parallel pieces when the buffer is large.
pub(crate) fn map(input: &[f32], out: &mut [f32], f: impl Fn(f32) -> f32 + Sync) {
    out.par_chunks_mut(PARALLEL_PIECE)
        .zip(input.par_chunks(PARALLEL_PIECE))
        .for_each(|(out, input)| {
            out.iter_mut().zip(input).for_each(|(o, &v)| *o = f(v));
        });
}

/// `out[i] = f(a[i], b[i])`, in parallel pieces.
pub(crate) fn zip_map(a: &[f32], b: &[f32], out: &mut [f32], f: impl Fn(f32, f32) -> f32 + Sync) {
    out.par_chunks_mut(PARALLEL_PIECE)
        .zip(
            a.par_chunks(PARALLEL_PIECE)
                .zip(b.par_chunks(PARALLEL_PIECE)),
        )
        .for_each(|(out, (a, b))| {
            for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
                *o = f(a, b);
            }
        });
}

/// A seed for stream `stream` of `seed` (SplitMix64's finalizer over both): neighbouring seeds
/// and streams give unrelated generators, so no two batches, layers or pieces share masks.
pub(crate) fn mix_seed(seed: u64, stream: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Dropout with probability `p`: each value kept (and scaled by `1 / (1 - p)`) when a 32-bit
/// draw is at or above `p * 2^32`; `mask` keeps each value's factor for the backward pass.
/// Every piece of the buffer draws from its own generator, seeded from `seed` and the piece's
/// place, so the masks do not depend on the number of threads.
pub(crate) fn dropout(input: &[f32], p: f32, seed: u64, mask: &mut [f32], out: &mut [f32]) {
    let threshold = (p as f64 * 4_294_967_296.0) as u64;
    let scale = 1.0 / (1.0 - p);
    mask.par_chunks_mut(PARALLEL_PIECE)
        .zip(out.par_chunks_mut(PARALLEL_PIECE))
        .zip(input.par_chunks(PARALLEL_PIECE))
        .enumerate()
        .for_each(|(piece, ((mask, out), input))| {
            let mut rng = SmallRng::seed_from_u64(mix_seed(seed, piece as u64));
            for ((m, o), x) in mask
                .chunks_mut(2)
                .zip(out.chunks_mut(2))
                .zip(input.chunks(2))
            {
                let draws = rng.next_u64();
                for (i, draw) in [draws as u32, (draws >> 32) as u32]
                    .into_iter()
                    .enumerate()
                    .take(m.len())
                {
                    m[i] = if draw as u64 >= threshold { scale } else { 0.0 };
                    o[i] = x[i] * m[i];
                }
            }
        });
}

/// A convolution's geometry: square kernel, stride 1, zero padding on every side.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvGeometry {
    pub inputs: usize,
    pub outputs: usize,
    pub kernel: usize,
    pub padding: usize,
    pub height: usize,
    pub width: usize,
}

impl ConvGeometry {
    pub fn out_height(&self) -> usize {
        self.height + 2 * self.padding + 1 - self.kernel
    }

    pub fn out_width(&self) -> usize {
        self.width + 2 * self.padding + 1 - self.kernel
    }

    /// Output pixels per image: the rows one image adds to the GEMM.
    pub fn out_pixels(&self) -> usize {
        self.out_height() * self.out_width()
    }

    /// Values in one patch: the GEMM's inner dimension.
    pub fn patch(&self) -> usize {
        self.kernel * self.kernel * self.inputs
    }

    pub fn in_len(&self) -> usize {
        self.height * self.width * self.inputs
    }

    pub fn out_len(&self) -> usize {
        self.out_pixels() * self.outputs
    }

    /// PyTorch's weight `[O, C, k, k]` as the GEMM's right-hand matrix `[(ky, kx, c), O]`.
    pub fn pack_weight(&self, weight: &[f32], packed: &mut Vec<f32>) {
        let (k, c, o) = (self.kernel, self.inputs, self.outputs);
        packed.resize(self.patch() * o, 0.0);
        for out in 0..o {
            for ci in 0..c {
                for ky in 0..k {
                    for kx in 0..k {
                        packed[((ky * k + kx) * c + ci) * o + out] =
                            weight[((out * c + ci) * k + ky) * k + kx];
                    }
                }
            }
        }
    }

    /// The inverse of [`ConvGeometry::pack_weight`], for the weight's gradient.
    pub fn unpack_weight(&self, packed: &[f32], weight: &mut [f32]) {
        let (k, c, o) = (self.kernel, self.inputs, self.outputs);
        for out in 0..o {
            for ci in 0..c {
                for ky in 0..k {
                    for kx in 0..k {
                        weight[((out * c + ci) * k + ky) * k + kx] =
                            packed[((ky * k + kx) * c + ci) * o + out];
                    }
                }
            }
        }
    }

    /// Calls `visit(offset in the patches, Some(offset in the image), length)` for each run of
    /// image values a patch row holds, and `visit(offset, None, length)` for each run of it
    /// that overhangs the image: im2col copies the runs in and zeroes the overhangs, col2im
    /// adds the runs back.
    fn runs(&self, mut visit: impl FnMut(usize, Option<usize>, usize)) {
        let (k, c, p) = (self.kernel, self.inputs, self.padding as isize);
        let patch = self.patch();
        for oy in 0..self.out_height() {
            for ox in 0..self.out_width() {
                let row = (oy * self.out_width() + ox) * patch;
                // The kernel row's columns that fall inside the image.
                let first = (p - ox as isize).clamp(0, k as isize) as usize;
                let last = (self.width as isize + p - ox as isize).clamp(first as isize, k as isize)
                    as usize;
                for ky in 0..k {
                    let at = row + ky * k * c;
                    let iy = oy as isize + ky as isize - p;
                    if iy < 0 || iy >= self.height as isize {
                        visit(at, None, k * c);
                        continue;
                    }
                    if first > 0 {
                        visit(at, None, first * c);
                    }
                    if last > first {
                        let ix = (ox + first) as isize - p;
                        let image = (iy as usize * self.width + ix as usize) * c;
                        visit(at + first * c, Some(image), (last - first) * c);
                    }
                    if last < k {
                        visit(at + last * c, None, (k - last) * c);
                    }
                }
            }
        }
    }

    /// One image's patches, one row each (`[out_pixels, patch]`), zero where they overhang.
    pub fn im2col(&self, image: &[f32], cols: &mut [f32]) {
        self.runs(|row, at, len| {
            let cols = &mut cols[row..row + len];
            match at {
                Some(at) => cols.copy_from_slice(&image[at..at + len]),
                None => cols.fill(0.0),
            }
        });
    }

    /// The patches of every image in `input`, one after the other, in `cols` (resized to fit).
    fn im2col_images(&self, input: &[f32], cols: &mut Vec<f32>) {
        let per_image = self.out_pixels() * self.patch();
        cols.resize(input.len() / self.in_len() * per_image, 0.0);
        for (image, cols) in input
            .chunks_exact(self.in_len())
            .zip(cols.chunks_exact_mut(per_image))
        {
            self.im2col(image, cols);
        }
    }

    /// Adds every patch row of `cols` back onto the image positions it came from.
    pub fn col2im(&self, cols: &[f32], image: &mut [f32]) {
        image.fill(0.0);
        self.runs(|row, at, len| {
            if let Some(at) = at {
                for (v, &d) in image[at..at + len].iter_mut().zip(&cols[row..row + len]) {
                    *v += d;
                }
            }
        });
    }

    /// Images whose patches are built and multiplied together: about 512 KB of patches,
    /// which stay in a core's cache between im2col and the GEMM. The direct convolution takes
    /// the same groups, and sums its weight gradient per group in their order.
    fn group(&self) -> usize {
        ((512 << 10) / (self.out_pixels() * self.patch() * 4)).max(1)
    }

    /// Whether the convolution runs directly rather than through patches and a GEMM: for
    /// one-channel images (every CNN's first layer), in blocks of [`LANES`] output channels.
    /// Other channel counts (LeNet-5's 6) stay with the GEMM, which handles any shape well,
    /// where a direct loop over a few channels would chain its multiply-adds one after another.
    fn is_direct(&self) -> bool {
        self.inputs == 1 && self.outputs.is_multiple_of(LANES)
    }

    /// The forward pass of a batch: `out = patches · packed + bias`, a few images at a time
    /// (or directly: [`ConvGeometry::is_direct`]).
    pub fn forward(&self, input: &[f32], packed: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
        let (patch, o) = (self.patch(), self.outputs);
        let group = self.group();
        if self.is_direct() {
            return self.direct_forward(input, packed, bias, out);
        }
        input
            .par_chunks(group * self.in_len())
            .zip(out.par_chunks_mut(group * self.out_len()))
            // One patch buffer per piece of work rayon hands a thread, reused across groups.
            .for_each_init(Vec::new, |cols, (input, out)| {
                let rows = out.len() / o;
                self.im2col_images(input, cols);
                gemm([rows, patch, o], (cols, patch, 1), (packed, o, 1), out);
                if let Some(bias) = bias {
                    for row in out.chunks_exact_mut(o) {
                        row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
                    }
                }
            });
    }

    /// The backward pass, rebuilding the patches of `input` a few images at a time (or directly,
    /// where the input needs no gradient: [`ConvGeometry::is_direct`]): the packed
    /// weight's gradient (and the bias's) from the output's gradient `d_out`; with `d_input`,
    /// the input's gradient.
    pub fn backward(
        &self,
        input: &[f32],
        packed: &[f32],
        d_out: &[f32],
        d_packed: &mut [f32],
        d_bias: Option<&mut [f32]>,
        d_input: Option<&mut [f32]>,
    ) {
        let (pixels, patch, o) = (self.out_pixels(), self.patch(), self.outputs);
        let group = self.group();
        if self.is_direct() && d_input.is_none() {
            self.direct_weight_gradient(input, d_out, d_packed);
            return self.bias_gradient(d_out, d_bias);
        }
        let d_inputs: Vec<Option<&mut [f32]>> = match d_input {
            Some(d_input) => d_input
                .chunks_mut(group * self.in_len())
                .map(Some)
                .collect(),
            None => (0..d_out.len().div_ceil(group * self.out_len()))
                .map(|_| None)
                .collect(),
        };
        // Each group's share of the weight gradient, summed after in order: the same bits
        // whatever the number of threads.
        let partial: Vec<Vec<f32>> = input
            .par_chunks(group * self.in_len())
            .zip(d_out.par_chunks(group * self.out_len()))
            .zip(d_inputs)
            // One patch buffer per piece of work rayon hands a thread, reused across groups:
            // im2col writes every value of it.
            .map_init(Vec::new, |cols, ((input, d_out), d_input)| {
                let rows = d_out.len() / o;
                self.im2col_images(input, cols);
                let mut grad = vec![0.0; patch * o];
                gemm([patch, rows, o], (cols, 1, patch), (d_out, o, 1), &mut grad);
                if let Some(d_input) = d_input {
                    // Patch gradients `d_out · packedᵀ`, then folded back onto the images.
                    gemm([rows, o, patch], (d_out, o, 1), (packed, 1, o), cols);
                    for (d_image, cols) in d_input
                        .chunks_exact_mut(self.in_len())
                        .zip(cols.chunks_exact(pixels * patch))
                    {
                        self.col2im(cols, d_image);
                    }
                }
                grad
            })
            .collect();
        sum_in_order(partial, d_packed);
        self.bias_gradient(d_out, d_bias);
    }

    fn bias_gradient(&self, d_out: &[f32], d_bias: Option<&mut [f32]>) {
        if let Some(d_bias) = d_bias {
            d_bias.fill(0.0);
            for row in d_out.chunks_exact(self.outputs) {
                d_bias.iter_mut().zip(row).for_each(|(g, d)| *g += d);
            }
        }
    }

    /// Side of a padded one-channel image's rows.
    fn padded_width(&self) -> usize {
        self.width + 2 * self.padding
    }

    /// `image` with `padding` zeros on every side, so that every tap of the direct loops
    /// reads a value without a bounds test.
    fn pad(&self, image: &[f32], padded: &mut Vec<f32>) {
        let (p, width) = (self.padding, self.padded_width());
        padded.clear();
        padded.resize(width * (self.height + 2 * p), 0.0);
        for (row, pixels) in image.chunks_exact(self.width).enumerate() {
            let at = (row + p) * width + p;
            padded[at..at + self.width].copy_from_slice(pixels);
        }
    }

    /// [`ConvGeometry::forward`] for one-channel images, without patches: with `kernel²`
    /// values per patch, im2col's GEMM spends its time packing and storing rather than
    /// multiplying (the `cnn`'s first convolution ran at 12 GFLOP/s, a ninth of one core's
    /// peak). Each output pixel's channels are summed over the taps in registers instead.
    fn direct_forward(&self, input: &[f32], packed: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
        input
            .par_chunks(self.group() * self.in_len())
            .zip(out.par_chunks_mut(self.group() * self.out_len()))
            .for_each_init(Vec::new, |padded, (input, out)| {
                for (image, out) in input
                    .chunks_exact(self.in_len())
                    .zip(out.chunks_exact_mut(self.out_len()))
                {
                    self.pad(image, padded);
                    direct_forward_image(self, padded, packed, bias, out);
                }
            });
    }

    /// [`ConvGeometry::backward`]'s weight gradient for one-channel images, without patches.
    fn direct_weight_gradient(&self, input: &[f32], d_out: &[f32], d_packed: &mut [f32]) {
        let group = self.group();
        let partial: Vec<Vec<f32>> = input
            .par_chunks(group * self.in_len())
            .zip(d_out.par_chunks(group * self.out_len()))
            .map_init(Vec::new, |padded, (input, d_out)| {
                let mut grad = vec![0.0; self.patch() * self.outputs];
                for (image, d_out) in input
                    .chunks_exact(self.in_len())
                    .zip(d_out.chunks_exact(self.out_len()))
                {
                    self.pad(image, padded);
                    direct_weight_gradient_image(self, padded, d_out, &mut grad);
                }
                grad
            })
            .collect();
        sum_in_order(partial, d_packed);
    }
}

/// Channels the direct convolution loops take at once: two AVX2 registers' worth.
const LANES: usize = 16;

/// Output pixels [`direct_forward_image`] sums at once, and taps [`direct_weight_gradient_image`]
/// sums at once: each sum is a chain of multiply-adds, each waiting for the one before it, so
/// on the Xeon we profiled (four cycles' latency, two multiply-add ports) one pixel's or one
/// tap's two registers alone kept the multiply-add units a quarter busy. Independent sums side
/// by side fill them, in the same order each, so the values are the same bits. The price: a
/// 3x3 kernel's nine taps take three groups, twelve sums of which three are thrown away.
const SIDE_BY_SIDE: usize = 4;

/// The first `SIDE_BY_SIDE` of `first..end` side by side, the last repeated past `end`: the
/// repeats are computed and thrown away, so that every group takes the same unrolled loop.
fn side_by_side(first: usize, end: usize) -> [usize; SIDE_BY_SIDE] {
    debug_assert!(first < end);
    std::array::from_fn(|j| (first + j).min(end - 1))
}

with_avx2! {
    fused FUSED;
    /// One padded one-channel image's outputs: for each pixel and block of [`LANES`]
    /// channels, the sum over the taps of the input value times the tap's weights.
    fn direct_forward_image(
        conv: &ConvGeometry,
        padded: &[f32],
        packed: &[f32],
        bias: Option<&[f32]>,
        out: &mut [f32],
    ) {
        let (k, o, width) = (conv.kernel, conv.outputs, conv.padded_width());
        let pixels = conv.out_pixels();
        for first_pixel in (0..pixels).step_by(SIDE_BY_SIDE) {
            let corners = side_by_side(first_pixel, pixels)
                .map(|pixel| (pixel / conv.out_width()) * width + pixel % conv.out_width());
            for first in (0..o).step_by(LANES) {
                let start = bias.map_or([0.0; LANES], |bias| {
                    bias[first..first + LANES].try_into().unwrap()
                });
                let mut sums = [start; SIDE_BY_SIDE];
                for ky in 0..k {
                    for kx in 0..k {
                        let weights: &[f32; LANES] = packed[(ky * k + kx) * o + first..][..LANES]
                            .try_into()
                            .unwrap();
                        for (sum, corner) in sums.iter_mut().zip(corners) {
                            let x = padded[corner + ky * width + kx];
                            for (s, &w) in sum.iter_mut().zip(weights) {
                                *s = multiply_add::<FUSED>(x, w, *s);
                            }
                        }
                    }
                }
                for (pixel, sum) in (first_pixel..pixels).zip(&sums) {
                    out[pixel * o + first..][..LANES].copy_from_slice(sum);
                }
            }
        }
    }
}

with_avx2! {
    fused FUSED;
    /// Adds one padded one-channel image's share to the packed weight's gradient `grad`: for
    /// each tap and block of [`LANES`] channels, the output gradient's rows weighted by the
    /// input value the tap read.
    fn direct_weight_gradient_image(
        conv: &ConvGeometry,
        padded: &[f32],
        d_out: &[f32],
        grad: &mut [f32],
    ) {
        let (k, o, width) = (conv.kernel, conv.outputs, conv.padded_width());
        let (taps, out_width) = (k * k, conv.out_width());
        for first_tap in (0..taps).step_by(SIDE_BY_SIDE) {
            let group = side_by_side(first_tap, taps);
            let offsets = group.map(|tap| (tap / k) * width + tap % k);
            for first in (0..o).step_by(LANES) {
                let mut sums = group
                    .map(|tap| <[f32; LANES]>::try_from(&grad[tap * o + first..][..LANES]).unwrap());
                for oy in 0..conv.out_height() {
                    let reads = &padded[oy * width..];
                    let rows = &d_out[oy * out_width * o..][..out_width * o];
                    for (ox, row) in rows.chunks_exact(o).enumerate() {
                        let d: &[f32; LANES] = row[first..first + LANES].try_into().unwrap();
                        for (sum, offset) in sums.iter_mut().zip(offsets) {
                            let x = reads[ox + offset];
                            for (s, &d) in sum.iter_mut().zip(d) {
                                *s = multiply_add::<FUSED>(x, d, *s);
                            }
                        }
                    }
                }
                for (tap, sum) in (first_tap..taps).zip(&sums) {
                    grad[tap * o + first..][..LANES].copy_from_slice(sum);
                }
            }
        }
    }
}

/// The per-group partial sums added into `total` in the groups' order: the same bits
/// whatever the number of threads.
fn sum_in_order(partial: Vec<Vec<f32>>, total: &mut [f32]) {
    total.fill(0.0);
    for part in partial {
        total.iter_mut().zip(&part).for_each(|(t, p)| *t += p);
    }
}

/// Per-channel sums of two quantities over channels-last rows: `add(block, first, second)`
/// adds one block of rows' contributions in `f32`; the blocks' sums are added in `f64`, in
/// order, so that large batches lose no precision and the result is the same bits whatever
/// the number of threads.
fn channel_sums(
    blocks: usize,
    channels: usize,
    add: impl Fn(usize, &mut [f32], &mut [f32]) + Sync,
) -> (Vec<f64>, Vec<f64>) {
    let partial: Vec<(Vec<f32>, Vec<f32>)> = (0..blocks)
        .into_par_iter()
        .map(|block| {
            let (mut first, mut second) = (vec![0.0f32; channels], vec![0.0f32; channels]);
            add(block, &mut first, &mut second);
            (first, second)
        })
        .collect();
    let (mut a, mut b) = (vec![0.0f64; channels], vec![0.0f64; channels]);
    for (first, second) in partial {
        a.iter_mut().zip(&first).for_each(|(a, &s)| *a += s as f64);
        b.iter_mut().zip(&second).for_each(|(b, &s)| *b += s as f64);
    }
    (a, b)
}

/// Rows per block of [`channel_sums`] when the rows are not grouped by image.
const SUM_BLOCK: usize = 256;

/// `out = input * scale[c] + shift[c]` over channels-last rows.
pub(crate) fn scale_shift(input: &[f32], scale: &[f32], shift: &[f32], out: &mut [f32]) {
    let channels = scale.len();
    let piece = PARALLEL_PIECE.div_ceil(channels) * channels;
    out.par_chunks_mut(piece)
        .zip(input.par_chunks(piece))
        .for_each(|(out, input)| scale_shift_rows(input, scale, shift, out));
}

fn scale_shift_rows(input: &[f32], scale: &[f32], shift: &[f32], out: &mut [f32]) {
    let channels = scale.len();
    for (out, input) in out
        .chunks_exact_mut(channels)
        .zip(input.chunks_exact(channels))
    {
        for (((o, &x), &a), &b) in out.iter_mut().zip(input).zip(scale).zip(shift) {
            *o = x * a + b;
        }
    }
}

with_avx2! {
    /// The batch's mean and biased variance per channel of channels-last `input`. The sums are
    /// taken around the first row's values, so that a mean far from zero cancels nothing.
    pub(crate) fn batch_statistics(input: &[f32], channels: usize) -> (Vec<f64>, Vec<f64>) {
        let block = SUM_BLOCK * channels;
        let origin = &input[..channels];
        let (sum, squares) =
            channel_sums(input.len().div_ceil(block), channels, |i, sum, squares| {
                let rows = &input[i * block..((i + 1) * block).min(input.len())];
                for row in rows.chunks_exact(channels) {
                    for (((s, q), &x), &o) in
                        sum.iter_mut().zip(squares.iter_mut()).zip(row).zip(origin)
                    {
                        let x = x - o;
                        *s += x;
                        *q += x * x;
                    }
                }
            });
        let n = (input.len() / channels) as f64;
        let shift: Vec<f64> = sum.iter().map(|s| s / n).collect();
        let variance = squares
            .iter()
            .zip(&shift)
            .map(|(q, m)| (q / n - m * m).max(0.0))
            .collect();
        let mean = shift
            .iter()
            .zip(origin)
            .map(|(m, &o)| m + o as f64)
            .collect();
        (mean, variance)
    }
}

/// What batch norm's backward pass needs besides the output's gradient: the input, the
/// batch's statistics and the scale.
pub(crate) struct NormSaved<'a> {
    pub input: &'a [f32],
    pub mean: &'a [f32],
    pub inv_std: &'a [f32],
    pub gamma: &'a [f32],
}

impl NormSaved<'_> {
    /// From `Σ d` and `Σ d·x̂` per channel over `rows` rows: the gradients of the shift and the
    /// scale, and what the input's gradient takes.
    fn finish(
        &self,
        (sum, dot): (Vec<f64>, Vec<f64>),
        rows: usize,
        d_gamma: &mut [f32],
        d_beta: &mut [f32],
    ) -> NormInputGradient {
        let channels = self.mean.len();
        let n = rows as f64;
        let mut gradient = NormInputGradient {
            coefficient: vec![0.0; channels],
            mean_d: vec![0.0; channels],
            centred: vec![0.0; channels],
            mean: self.mean.to_vec(),
        };
        for c in 0..channels {
            d_beta[c] = sum[c] as f32;
            d_gamma[c] = dot[c] as f32;
            let inv_std = self.inv_std[c] as f64;
            let k = self.gamma[c] as f64 * inv_std;
            gradient.coefficient[c] = k as f32;
            gradient.mean_d[c] = (sum[c] / n) as f32;
            gradient.centred[c] = (k * inv_std * dot[c] / n) as f32;
        }
        gradient
    }
}

/// Batch norm's input gradient, `γ/σ · (d − mean(d) − x̂ · mean(d·x̂))`, as
/// `coefficient · (d − mean_d) − (x − mean) · centred` per channel.
struct NormInputGradient {
    coefficient: Vec<f32>,
    mean_d: Vec<f32>,
    centred: Vec<f32>,
    mean: Vec<f32>,
}

impl NormInputGradient {
    /// Over channels-last rows of the input `x`, with the output's gradient `d` (zero where
    /// `None`). Inlined into its callers, which are compiled for AVX2 where the processor has
    /// it; every slice is cut to the channels first, so that the loops vectorize.
    #[inline(always)]
    fn rows(&self, x: &[f32], d: Option<&[f32]>, d_input: &mut [f32]) {
        let channels = self.mean.len();
        let (coefficient, mean_d) = (&self.coefficient[..channels], &self.mean_d[..channels]);
        let (mean, centred) = (&self.mean[..channels], &self.centred[..channels]);
        let rows = d_input
            .chunks_exact_mut(channels)
            .zip(x.chunks_exact(channels));
        match d {
            Some(d) => {
                for ((d_input, x), d) in rows.zip(d.chunks_exact(channels)) {
                    let (d_input, x, d) =
                        (&mut d_input[..channels], &x[..channels], &d[..channels]);
                    for c in 0..channels {
                        d_input[c] =
                            coefficient[c] * (d[c] - mean_d[c]) - (x[c] - mean[c]) * centred[c];
                    }
                }
            }
            None => {
                for (d_input, x) in rows {
                    let (d_input, x) = (&mut d_input[..channels], &x[..channels]);
                    for c in 0..channels {
                        d_input[c] = -coefficient[c] * mean_d[c] - (x[c] - mean[c]) * centred[c];
                    }
                }
            }
        }
    }
}

with_avx2! {
    /// Batch norm's backward pass over channels-last rows: `d_input` from the output's gradient,
    /// and the gradients of the scale (`gamma`) and shift (`beta`).
    pub(crate) fn batch_norm_backward(
        saved: NormSaved,
        d_out: &[f32],
        d_gamma: &mut [f32],
        d_beta: &mut [f32],
        d_input: Option<&mut [f32]>,
    ) {
        let channels = saved.mean.len();
        let block = SUM_BLOCK * channels;
        let sums = channel_sums(d_out.len().div_ceil(block), channels, |i, sum, dot| {
            let range = i * block..((i + 1) * block).min(d_out.len());
            let rows = d_out[range.clone()].chunks_exact(channels);
            for (d, x) in rows.zip(saved.input[range].chunks_exact(channels)) {
                for c in 0..channels {
                    sum[c] += d[c];
                    dot[c] += d[c] * (x[c] - saved.mean[c]) * saved.inv_std[c];
                }
            }
        });
        let gradient = saved.finish(sums, d_out.len() / channels, d_gamma, d_beta);
        let Some(d_input) = d_input else { return };
        let piece = PARALLEL_PIECE.div_ceil(channels) * channels;
        d_input
            .par_chunks_mut(piece)
            .zip(d_out.par_chunks(piece).zip(saved.input.par_chunks(piece)))
            .for_each(|(d_input, (d_out, input))| gradient.rows(input, Some(d_out), d_input));
    }
}

/// A 2x2, stride-2 pooling over channels-last images (odd edges dropped, as PyTorch does).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolGeometry {
    pub height: usize,
    pub width: usize,
    pub channels: usize,
}

/// One pooling window over a row of channels: the largest of the four values (each
/// `relu(x * scale + shift)` with `NORM_RELU`, else `x`) and which of them it was, the first
/// of equal values winning as in PyTorch. Written as straight loops over channels, which the
/// compiler vectorizes.
#[inline(always)]
fn max_window<const NORM_RELU: bool>(
    rows: [&[f32]; 4],
    scale: &[f32],
    shift: &[f32],
    out: &mut [f32],
    argmax: &mut [u8],
) {
    // Every slice cut to the channels first, so that the loop compiles to vector code whole:
    // with `scale` and `shift` of unknown length it kept the last 8 channels of every row
    // (a quarter of the `cnn`'s first 32) for a scalar loop.
    let c = out.len();
    let (rows, argmax) = (rows.map(|row| &row[..c]), &mut argmax[..c]);
    let (scale, shift) = match NORM_RELU {
        true => (&scale[..c], &shift[..c]),
        false => (scale, shift),
    };
    let value = |row: &[f32], ch: usize| {
        if NORM_RELU {
            (row[ch] * scale[ch] + shift[ch]).max(0.0)
        } else {
            row[ch]
        }
    };
    for ch in 0..c {
        let (mut max, mut best) = (value(rows[0], ch), 0);
        for (i, row) in rows.iter().enumerate().skip(1) {
            let v = value(row, ch);
            if v > max {
                (max, best) = (v, i as u8);
            }
        }
        out[ch] = max;
        argmax[ch] = best;
    }
}

/// The value of `rows[argmax]` at channel `ch`: all four read, then selected, so that the
/// compiler can vectorize the loop it sits in.
#[inline(always)]
fn winner(rows: [&[f32]; 4], argmax: u8, ch: usize) -> f32 {
    let [a, b, c, d] = rows.map(|row| row[ch]);
    let top = if argmax == 1 { b } else { a };
    let bottom = if argmax == 3 { d } else { c };
    if argmax >= 2 { bottom } else { top }
}

/// Adds `coefficient · d_pooled` to `d_row`, the values at one position of their windows,
/// where that position won (`argmax == position`) and the ReLU let the gradient through
/// (`pooled > 0`). A function of its own so that the compiler knows `d_row` aliases nothing
/// else and vectorizes the loop (written inline in a closure, it stayed scalar).
#[inline(always)]
fn add_to_winners(
    d_row: &mut [f32],
    position: u8,
    argmax: &[u8],
    pooled: &[f32],
    d_pooled: &[f32],
    coefficient: &[f32],
) {
    let c = d_row.len();
    let (argmax, pooled, d_pooled) = (&argmax[..c], &pooled[..c], &d_pooled[..c]);
    let coefficient = &coefficient[..c];
    for ch in 0..c {
        let passed = through_relu(pooled[ch], coefficient[ch] * d_pooled[ch]);
        d_row[ch] += if argmax[ch] == position { passed } else { 0.0 };
    }
}

/// The gradient `d` of a pooled value as it reaches the pooling's input: all of it where the
/// ReLU before the pooling let the value through (`pooled > 0`), nothing where it did not.
#[inline(always)]
fn through_relu(pooled: f32, d: f32) -> f32 {
    if pooled > 0.0 { d } else { 0.0 }
}

/// Adds one window's share to batch norm's per-channel sums `Σ d` and `Σ d·x̂` (`x̂` the
/// normalised input), `d` being the pooled gradient that reached the window's winner through
/// the ReLU (`pooled > 0`). A function of its own, like [`add_to_winners`], so that the loop
/// vectorizes: written inline in the closure, half its time went to a scalar copy.
#[inline(always)]
fn add_winner_sums(
    sum: &mut [f32],
    dot: &mut [f32],
    rows: [&[f32]; 4],
    argmax: &[u8],
    pooled: &[f32],
    d_pooled: &[f32],
    saved: &NormSaved,
) {
    let c = sum.len();
    let (dot, argmax, pooled, d_pooled) =
        (&mut dot[..c], &argmax[..c], &pooled[..c], &d_pooled[..c]);
    let (mean, inv_std) = (&saved.mean[..c], &saved.inv_std[..c]);
    let rows = rows.map(|row| &row[..c]);
    for ch in 0..c {
        let x = winner(rows, argmax[ch], ch);
        let d = through_relu(pooled[ch], d_pooled[ch]);
        sum[ch] += d;
        dot[ch] += d * (x - mean[ch]) * inv_std[ch];
    }
}

/// Runs `work` on the matching items of three parallel iterators: a batch's pieces, one per
/// thread, in several buffers.
fn for_each_zipped<A: Send, B: Send, C: Send>(
    a: impl IndexedParallelIterator<Item = A>,
    b: impl IndexedParallelIterator<Item = B>,
    c: impl IndexedParallelIterator<Item = C>,
    work: impl Fn(A, B, C) + Sync + Send,
) {
    a.zip(b).zip(c).for_each(|((a, b), c)| work(a, b, c));
}

impl PoolGeometry {
    pub fn in_len(&self) -> usize {
        self.height * self.width * self.channels
    }

    pub fn out_len(&self) -> usize {
        (self.height / 2) * (self.width / 2) * self.channels
    }

    /// Calls `visit(out_offset, [offsets of the window's four rows of channels])` for every
    /// window of one image.
    fn windows(&self, mut visit: impl FnMut(usize, [usize; 4])) {
        let (w, c) = (self.width, self.channels);
        for py in 0..self.height / 2 {
            for px in 0..w / 2 {
                let top = (2 * py * w + 2 * px) * c;
                let bottom = top + w * c;
                visit((py * (w / 2) + px) * c, [top, top + c, bottom, bottom + c]);
            }
        }
    }

    /// Calls `visit(range)` for each run of one image's values that no window covers: the last
    /// column of an odd width, the last row of an odd height.
    fn outside_windows(&self, mut visit: impl FnMut(std::ops::Range<usize>)) {
        let (h, w, c) = (self.height, self.width, self.channels);
        if w % 2 == 1 {
            for y in 0..h - h % 2 {
                let at = (y * w + w - 1) * c;
                visit(at..at + c);
            }
        }
        if h % 2 == 1 {
            visit((h - 1) * w * c..h * w * c);
        }
    }

    pub fn max_backward(&self, d_out: &[f32], argmax: &[u8], d_input: &mut [f32]) {
        let c = self.channels;
        let per = images_per_thread(d_out.len() / self.out_len());
        for_each_zipped(
            d_input.par_chunks_mut(per * self.in_len()),
            d_out.par_chunks(per * self.out_len()),
            argmax.par_chunks(per * self.out_len()),
            |d_input, d_out, argmax| {
                d_input.fill(0.0);
                for ((d_image, d_out), argmax) in d_input
                    .chunks_exact_mut(self.in_len())
                    .zip(d_out.chunks_exact(self.out_len()))
                    .zip(argmax.chunks_exact(self.out_len()))
                {
                    self.windows(|o, rows| {
                        for ch in 0..c {
                            d_image[rows[argmax[o + ch] as usize] + ch] = d_out[o + ch];
                        }
                    });
                }
            },
        );
    }

    pub fn average_forward(&self, input: &[f32], out: &mut [f32]) {
        let c = self.channels;
        let per = images_per_thread(input.len() / self.in_len());
        input
            .par_chunks(per * self.in_len())
            .zip(out.par_chunks_mut(per * self.out_len()))
            .for_each(|(input, out)| {
                for (image, out) in input
                    .chunks_exact(self.in_len())
                    .zip(out.chunks_exact_mut(self.out_len()))
                {
                    self.windows(|o, rows| {
                        for ch in 0..c {
                            out[o + ch] = rows.iter().map(|&r| image[r + ch]).sum::<f32>() * 0.25;
                        }
                    });
                }
            });
    }

    pub fn average_backward(&self, d_out: &[f32], d_input: &mut [f32]) {
        let c = self.channels;
        let per = images_per_thread(d_out.len() / self.out_len());
        d_input
            .par_chunks_mut(per * self.in_len())
            .zip(d_out.par_chunks(per * self.out_len()))
            .for_each(|(d_input, d_out)| {
                d_input.fill(0.0);
                for (d_image, d_out) in d_input
                    .chunks_exact_mut(self.in_len())
                    .zip(d_out.chunks_exact(self.out_len()))
                {
                    self.windows(|o, rows| {
                        for ch in 0..c {
                            rows.iter()
                                .for_each(|&r| d_image[r + ch] = d_out[o + ch] * 0.25);
                        }
                    });
                }
            });
    }
}

with_avx2! {
    /// Max pooling of `transform(x)`: with no transform, plain max pooling; with batch norm's
    /// per-channel scale and shift, batch norm, ReLU and max pooling in one pass. `argmax`
    /// keeps which of the four won each window (the first of equal values, as in PyTorch).
    pub(crate) fn max_pool_forward(
        pool: &PoolGeometry,
        input: &[f32],
        transform: Option<(&[f32], &[f32])>,
        out: &mut [f32],
        argmax: &mut [u8],
    ) {
        let c = pool.channels;
        let per = images_per_thread(input.len() / pool.in_len());
        for_each_zipped(
            input.par_chunks(per * pool.in_len()),
            out.par_chunks_mut(per * pool.out_len()),
            argmax.par_chunks_mut(per * pool.out_len()),
            |input, out, argmax| {
                for ((image, out), argmax) in input
                    .chunks_exact(pool.in_len())
                    .zip(out.chunks_exact_mut(pool.out_len()))
                    .zip(argmax.chunks_exact_mut(pool.out_len()))
                {
                    pool.windows(|o, rows| {
                        let rows = rows.map(|at| &image[at..at + c]);
                        let (out, argmax) = (&mut out[o..o + c], &mut argmax[o..o + c]);
                        match transform {
                            Some((scale, shift)) => {
                                max_window::<true>(rows, scale, shift, out, argmax)
                            }
                            None => max_window::<false>(rows, &[], &[], out, argmax),
                        }
                    });
                }
            },
        );
    }
}

with_avx2! {
    /// The backward pass of batch norm, ReLU and max pooling fused by
    /// [`max_pool_forward`]: only each window's winner gets the pooled gradient, and
    /// only where the ReLU let it through (`pooled > 0`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn norm_relu_max_pool_backward(
        pool: &PoolGeometry,
        saved: NormSaved,
        pooled: &[f32],
        d_pooled: &[f32],
        argmax: &[u8],
        d_gamma: &mut [f32],
        d_beta: &mut [f32],
        d_input: Option<&mut [f32]>,
    ) {
        let c = pool.channels;
        let images = pooled.len() / pool.out_len();
        let (in_len, out_len) = (pool.in_len(), pool.out_len());
        // Every slice is cut to the channels before the loops over them, which then compile
        // to vector code without bounds tests (they were a tenth of a cnn training step).
        let sums = channel_sums(images, c, |image, sum, dot| {
            let input = &saved.input[image * in_len..][..in_len];
            let at = image * out_len;
            pool.windows(|o, rows| {
                let rows = rows.map(|r| &input[r..][..c]);
                let argmax = &argmax[at + o..][..c];
                let (pooled, d_pooled) = (&pooled[at + o..][..c], &d_pooled[at + o..][..c]);
                add_winner_sums(sum, dot, rows, argmax, pooled, d_pooled, &saved);
            });
        });
        let gradient = saved.finish(sums, images * pool.height * pool.width, d_gamma, d_beta);
        let Some(d_input) = d_input else { return };
        let per = images_per_thread(images);
        for_each_zipped(
            d_input.par_chunks_mut(per * in_len),
            saved.input.par_chunks(per * in_len),
            (pooled.par_chunks(per * out_len))
                .zip(d_pooled.par_chunks(per * out_len))
                .zip(argmax.par_chunks(per * out_len)),
            |d_input, input, ((pooled, d_pooled), argmax)| {
                for (image, (d_image, input)) in d_input
                    .chunks_exact_mut(in_len)
                    .zip(input.chunks_exact(in_len))
                    .enumerate()
                {
                    // Every value's share of the batch terms, then the winners' own gradient
                    // while the row is in the first-level cache.
                    let at = image * out_len;
                    pool.windows(|o, rows| {
                        let argmax = &argmax[at + o..][..c];
                        let (pooled, d_pooled) = (&pooled[at + o..][..c], &d_pooled[at + o..][..c]);
                        for (position, row) in rows.into_iter().enumerate() {
                            let d_row = &mut d_image[row..][..c];
                            gradient.rows(&input[row..][..c], None, d_row);
                            let coefficient = &gradient.coefficient;
                            let position = position as u8;
                            add_to_winners(d_row, position, argmax, pooled, d_pooled, coefficient);
                        }
                    });
                    pool.outside_windows(|run| {
                        gradient.rows(&input[run.clone()], None, &mut d_image[run])
                    });
                }
            },
        );
    }
}

/// Channels-last feature maps `[N, H, W, C]` to PyTorch's flattened order `[N, C*H*W]`, or
/// back (`inverse`).
pub(crate) fn flatten(input: &[f32], [h, w, c]: [usize; 3], out: &mut [f32], inverse: bool) {
    let len = h * w * c;
    out.par_chunks_mut(len)
        .zip(input.par_chunks(len))
        .for_each(|(out, image)| {
            // Written in order, read with a stride: one image (12.5 KB in and out for the
            // built-in `cnn`'s 7x7x64) stays in the first-level cache either way.
            if inverse {
                for (pixel, out) in out.chunks_exact_mut(c).enumerate() {
                    let channels = image[pixel..].iter().step_by(h * w);
                    out.iter_mut().zip(channels).for_each(|(o, &v)| *o = v);
                }
            } else {
                for (ch, out) in out.chunks_exact_mut(h * w).enumerate() {
                    let pixels = image[ch..].iter().step_by(c);
                    out.iter_mut().zip(pixels).for_each(|(o, &v)| *o = v);
                }
            }
        });
}

/// Products of a fully connected layer smaller than this many multiply-adds run in one piece:
/// handing half of one to rayon costs more than it saves (the tutorial's batch-32 products,
/// about 3 M, took 1.8 s per epoch split against 1.0 s whole). A network of such layers alone
/// trains on two cores another way (`super::chain`).
pub(crate) const SPLIT_PRODUCTS_ABOVE: usize = 1 << 23;

/// Rows per piece of a split product. Fixed, not the batch divided by the number of threads:
/// the GEMM picks its algorithm, and with it the order of its sums, by the product's shape,
/// so the pieces' shapes must not depend on the number of threads for training to give the
/// same bits on any of them.
const ROWS_PER_PIECE: usize = 32;

/// Rows per piece for a product of `macs` multiply-adds over `rows` rows: all of them when
/// the product is small, or when the caller already runs on one of rayon's threads (inference
/// splits its batch once, at the top).
fn rows_per_piece(rows: usize, macs: usize) -> usize {
    if macs < SPLIT_PRODUCTS_ABOVE || rayon::current_thread_index().is_some() {
        rows.max(1)
    } else {
        ROWS_PER_PIECE
    }
}

/// `out = activation(input · weightᵀ + bias)` for a fully connected layer with PyTorch's
/// `[out, in]` weight, in pieces of rows when the product is large enough to pay for it.
///
/// Given the weight [`InputMajor`] too, a piece whose input is mostly zeros (MNIST's blank
/// pixels, or what a ReLU left) is summed over its nonzero terms alone
/// ([`sum_nonzero_terms`]): the same bits as the GEMM's, for a fraction of the work. So is a
/// piece of a few rows, whatever its input: the GEMM would pack the whole weight for them
/// (for the `cnn`'s 3,136 x 128 head and one image, twenty times the cost of the sums).
pub(crate) fn linear_forward(
    input: &[f32],
    weight: &[f32],
    input_major: Option<&InputMajor>,
    bias: &[f32],
    [inputs, outputs]: [usize; 2],
    out: &mut [f32],
    activation: impl Fn(f32) -> f32 + Sync,
) {
    let rows = input.len() / inputs;
    let per = rows_per_piece(rows, rows * inputs * outputs);
    out.par_chunks_mut(per * outputs)
        .zip(input.par_chunks(per * inputs))
        .for_each(|(out, input)| {
            let rows = input.len() / inputs;
            let sparse = input_major.filter(|_| rows <= FEW_ROWS || mostly_zeros(input, rows));
            let summed = sparse.is_some_and(|by_input| sum_nonzero_terms(input, by_input, out));
            if !summed {
                gemm(
                    [rows, inputs, outputs],
                    (input, inputs, 1),
                    (weight, 1, inputs),
                    out,
                );
            }
            add_bias_and_activate(out, bias, &activation);
        });
}

with_avx2! {
    /// `activation(v + bias)` in place, row by row. Its own function, not a loop in
    /// [`linear_forward`]'s closure, which is compiled for the baseline: there this pass took
    /// 4% of the MLP's inference, four values at a time.
    fn add_bias_and_activate(out: &mut [f32], bias: &[f32], activation: &impl Fn(f32) -> f32) {
        for row in out.chunks_exact_mut(bias.len()) {
            row.iter_mut()
                .zip(bias)
                .for_each(|(v, b)| *v = activation(*v + b));
        }
    }
}

/// Pieces of at most this many rows are summed over their nonzero terms whatever their input.
const FEW_ROWS: usize = 32;

/// Whether fewer than [`SPARSE_BELOW`] of the values of `rows` rows are nonzero, judged from
/// eight rows spread over them: counting them all took a tenth of the MLP's inference.
fn mostly_zeros(values: &[f32], rows: usize) -> bool {
    const SAMPLED_ROWS: usize = 8;
    let len = values.len() / rows;
    let step = rows.div_ceil(SAMPLED_ROWS);
    let sampled = values.chunks_exact(len).step_by(step);
    let (nonzero, total) = sampled.fold((0, 0), |(nonzero, total), row| {
        (
            nonzero + row.iter().filter(|&&v| v != 0.0).count(),
            total + len,
        )
    });
    (nonzero as f64) < SPARSE_BELOW * total as f64
}

/// The share of nonzero inputs below which summing only the nonzero terms beats the GEMM,
/// which runs nearer the vector units' limit. Measured on a Xeon with AVX-512, MLP inference
/// in batches of 1,000: MNIST's pixels (about a fifth nonzero) summed this way made the whole
/// pass 1.1-1.2x faster; the first hidden layer's output (two fifths nonzero) ran as fast
/// either way, the second's (half nonzero) slower.
const SPARSE_BELOW: f64 = 0.3;

/// A fully connected layer's weight input by input (`[in, out]`), each row padded with zeros
/// to a whole number of [`NARROW_PANEL`]s: row `k` is what input `k` adds to every output, so
/// a term of the product is one contiguous load.
///
/// Each row starts on a cache line: a 64-byte load that straddles two lines takes two of
/// the core's load slots (aligned rows made [`sum_nonzero_terms`] 1.2x faster).
pub(crate) struct InputMajor {
    buffer: Vec<f32>,
    /// Where the first row starts in `buffer`.
    start: usize,
    inputs: usize,
    outputs: usize,
    width: usize,
}

/// The bytes of a cache line.
const CACHE_LINE: usize = 64;

impl InputMajor {
    /// From PyTorch's `[out, in]` layout.
    pub(crate) fn of(weight: &[f32], [inputs, outputs]: [usize; 2]) -> Self {
        let width = outputs.next_multiple_of(NARROW_PANEL);
        let spare = CACHE_LINE / size_of::<f32>();
        let buffer = vec![0.0; inputs * width + spare];
        let start = buffer.as_ptr().align_offset(CACHE_LINE).min(spare);
        let mut by_input = Self {
            buffer,
            start,
            inputs,
            outputs,
            width,
        };
        let values = by_input.values_mut();
        for (output, weights) in weight.chunks_exact(inputs).enumerate() {
            for (row, &w) in values.chunks_exact_mut(width).zip(weights) {
                row[output] = w;
            }
        }
        by_input
    }

    fn values(&self) -> &[f32] {
        &self.buffer[self.start..][..self.inputs * self.width]
    }

    fn values_mut(&mut self) -> &mut [f32] {
        &mut self.buffer[self.start..][..self.inputs * self.width]
    }
}

/// The narrowest group of outputs [`sum_nonzero_terms`] sums at a time: one AVX-512 vector,
/// two AVX2 ones.
const NARROW_PANEL: usize = 16;

/// `out = input · weightᵀ`, each value summed in order, in the blocks of [`gemm_into`], but
/// skipping the terms whose input is zero: with finite weights a zero term leaves a sum of
/// fused multiply-adds exactly as it was, so every value is the GEMM's to the bit (but for
/// the sign of a zero sum in the rare case that a product rounds to -0, which adding a
/// nonzero bias erases; an infinite weight times a zero input, NaN in the GEMM, is skipped
/// here). Rows go in tiles of [`ROWS_PER_TILE`], [`TERMS_PER_PASS`] inputs at a time over the
/// whole tile, so the weight rows a pass needs stay in the first-level cache; each pass's
/// nonzero inputs come from bit masks made once per tile. Returns false, computing nothing,
/// unless [`nonzero_terms_summed_here`].
pub(crate) fn sum_nonzero_terms(input: &[f32], weight: &InputMajor, out: &mut [f32]) -> bool {
    assert_eq!(input.len() % weight.inputs, 0);
    assert_eq!(
        out.len() * weight.inputs,
        input.len() * weight.outputs,
        "the output holds one row per input row"
    );
    if input.is_empty() {
        return true;
    }
    if !nonzero_terms_summed_here() {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the processor has AVX2 and FMA (just checked), and AVX-512F where that build runs.
    unsafe {
        if std::arch::is_x86_feature_detected!("avx512f") {
            nonzero_terms_avx512(input, weight, out)
        } else {
            nonzero_terms_avx2(input, weight, out)
        }
    }
    true
}

/// Whether [`sum_nonzero_terms`] runs on this processor: x86-64 with AVX2 and FMA, whose
/// fused multiply-adds are the GEMM's arithmetic. Elsewhere the GEMM sums every term.
pub(crate) fn nonzero_terms_summed_here() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        has!("avx2") && has!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// [`sum_nonzero_terms`] with sixteen of AVX-512's 32 registers of sums (two rows of eight),
/// the rest left for the weights loaded.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn nonzero_terms_avx512(input: &[f32], weight: &InputMajor, out: &mut [f32]) {
    nonzero_terms::<128>(input, weight, out)
}

/// [`sum_nonzero_terms`] with eight of AVX2's sixteen registers of sums (two rows of four).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn nonzero_terms_avx2(input: &[f32], weight: &InputMajor, out: &mut [f32]) {
    nonzero_terms::<32>(input, weight, out)
}

/// The inputs [`sum_nonzero_terms`] takes at a time, for every row of a tile, before the
/// next: the weight rows they need stay in the first-level cache while the tile's rows use
/// them. A whole number of them make a depth block.
const TERMS_PER_PASS: usize = 64;

/// Rows summed together, each over the same [`TERMS_PER_PASS`] inputs in turn.
const ROWS_PER_TILE: usize = 32;

// A pass's inputs are the bits of one `u64`, and passes must not straddle depth blocks.
const _: () = assert!(TERMS_PER_PASS <= 64 && DEPTH_BLOCK.is_multiple_of(TERMS_PER_PASS));

/// [`sum_nonzero_terms`]' loops, `PANEL` outputs at a time while a whole panel fits, then
/// [`NARROW_PANEL`] at a time.
#[inline(always)]
fn nonzero_terms<const PANEL: usize>(input: &[f32], weight: &InputMajor, out: &mut [f32]) {
    let inputs = weight.inputs;
    let outputs = weight.outputs;
    let passes = inputs.div_ceil(TERMS_PER_PASS);
    let mut nonzero = Vec::with_capacity(ROWS_PER_TILE * passes);
    let tiles = input.chunks(ROWS_PER_TILE * inputs);
    let next_tiles = tiles.clone().skip(1).chain([&[][..]]);
    for ((input, next_tile), out) in tiles
        .zip(next_tiles)
        .zip(out.chunks_mut(ROWS_PER_TILE * outputs))
    {
        nonzero.clear();
        for row in input.chunks_exact(inputs) {
            nonzero.extend(row.chunks(TERMS_PER_PASS).map(|values| {
                let bit = |(i, &v): (usize, &f32)| u64::from(v != 0.0) << i;
                values
                    .iter()
                    .enumerate()
                    .map(bit)
                    .fold(0, |mask, bit| mask | bit)
            }));
        }
        let tile = Tile {
            input,
            nonzero: &nonzero,
            inputs,
            outputs,
            passes,
        };
        // The next tile's input is read from memory while this tile's first panel is summed,
        // rather than when its masks are made, which would wait for it.
        let mut prefetch = Prefetch::spread(next_tile, passes * tile.pairs());
        let mut first = 0;
        while first + PANEL <= weight.width {
            tile.panel::<PANEL>(weight, first, out, &mut prefetch);
            first += PANEL;
        }
        while first < weight.width {
            tile.panel::<NARROW_PANEL>(weight, first, out, &mut prefetch);
            first += NARROW_PANEL;
        }
    }
}

/// Values to be read soon, brought into the second-level cache a few cache lines at each of
/// `steps` steps of other work: [`sum_nonzero_terms`]' first pass over a tile read its input
/// straight from memory (a third of the first layer's time in MLP inference) while the
/// processor's own prefetcher, which follows the loads it sees, had nothing to follow.
struct Prefetch<'a> {
    rest: &'a [f32],
    lines_per_step: usize,
}

impl<'a> Prefetch<'a> {
    const LINE_VALUES: usize = CACHE_LINE / size_of::<f32>();

    fn spread(values: &'a [f32], steps: usize) -> Self {
        let lines = values.len().div_ceil(Self::LINE_VALUES);
        Self {
            rest: values,
            lines_per_step: lines.div_ceil(steps.max(1)),
        }
    }

    /// Asks for the next `lines_per_step` cache lines, without waiting for them.
    #[inline(always)]
    fn step(&mut self) {
        for _ in 0..self.lines_per_step {
            if self.rest.is_empty() {
                return;
            }
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a prefetch only hints the cache and cannot fault; the address is in
            // `rest` anyway.
            unsafe {
                use std::arch::x86_64::{_MM_HINT_T1, _mm_prefetch};
                _mm_prefetch::<_MM_HINT_T1>(self.rest.as_ptr().cast());
            }
            self.rest = &self.rest[Self::LINE_VALUES.min(self.rest.len())..];
        }
    }
}

/// Rows of a [`nonzero_terms`] product, with which of each pass's inputs are nonzero: bit `i`
/// of `nonzero[row * passes + pass]` for input `pass * TERMS_PER_PASS + i`.
struct Tile<'a> {
    input: &'a [f32],
    nonzero: &'a [u64],
    inputs: usize,
    outputs: usize,
    /// `inputs` in passes of [`TERMS_PER_PASS`].
    passes: usize,
}

impl Tile<'_> {
    fn rows(&self) -> usize {
        self.input.len() / self.inputs
    }

    /// The pairs of rows [`Tile::panel`] sums together, a lone last row paired with itself.
    fn pairs(&self) -> usize {
        self.rows().div_ceil(2)
    }

    /// Outputs `first..first + PANEL` (those of them that exist) of every row.
    #[inline(always)]
    fn panel<const PANEL: usize>(
        &self,
        weight: &InputMajor,
        first: usize,
        out: &mut [f32],
        prefetch: &mut Prefetch,
    ) {
        let rows = self.rows();
        let passes = self.passes;
        let present = PANEL.min(self.outputs - first.min(self.outputs));
        let mut partial = [[0.0f32; PANEL]; ROWS_PER_TILE];
        for pass in 0..passes {
            let depth = pass * TERMS_PER_PASS;
            let starts_block = depth.is_multiple_of(DEPTH_BLOCK);
            let ends_block =
                (depth + TERMS_PER_PASS).is_multiple_of(DEPTH_BLOCK) || pass + 1 == passes;
            let weights = weight.values();
            for first_row in (0..rows).step_by(2) {
                prefetch.step();
                // Two rows at a time, over the inputs nonzero in either: each weight row
                // loaded serves both, and their sixteen sums keep both of the core's
                // multiply-add units busy. (A lone last row is paired with itself.)
                let pair = [first_row, (first_row + 1).min(rows - 1)];
                let values = pair.map(|row| &self.input[row * self.inputs..][..self.inputs]);
                let mut sums = match starts_block {
                    true => [[0.0; PANEL]; 2],
                    false => pair.map(|row| partial[row]),
                };
                let mut mask =
                    self.nonzero[pair[0] * passes + pass] | self.nonzero[pair[1] * passes + pass];
                while mask != 0 {
                    let k = depth + mask.trailing_zeros() as usize;
                    mask &= mask - 1;
                    let (x0, x1) = (values[0][k], values[1][k]);
                    let start = k * weight.width + first;
                    let w = &weights[start..start + PANEL];
                    let [sums0, sums1] = &mut sums;
                    for ((s0, s1), &w) in sums0.iter_mut().zip(sums1.iter_mut()).zip(w) {
                        *s0 = x0.mul_add(w, *s0);
                        *s1 = x1.mul_add(w, *s1);
                    }
                }
                for (row, sum) in pair.into_iter().zip(sums).take(rows - first_row) {
                    if !ends_block {
                        partial[row] = sum;
                        continue;
                    }
                    let total = &mut out[row * self.outputs + first..][..present];
                    if depth < DEPTH_BLOCK {
                        total.copy_from_slice(&sum[..present]);
                    } else {
                        total.iter_mut().zip(sum).for_each(|(t, s)| *t += s);
                    }
                }
            }
        }
    }
}

/// A fully connected layer's backward pass: the weight's gradient `d_outᵀ · input` (in pieces
/// of the weight's rows), the bias's, and with `d_input`, `d_out · weight` (in pieces of the
/// batch's rows).
pub(crate) fn linear_backward(
    input: &[f32],
    weight: &[f32],
    d_out: &[f32],
    [inputs, outputs]: [usize; 2],
    d_weight: &mut [f32],
    d_bias: &mut [f32],
    d_input: Option<&mut [f32]>,
) {
    let rows = d_out.len() / outputs;
    let macs = rows * inputs * outputs;
    let per_output = rows_per_piece(outputs, macs);
    d_weight
        .par_chunks_mut(per_output * inputs)
        .enumerate()
        .for_each(|(i, d_weight)| {
            let first = i * per_output;
            let count = d_weight.len() / inputs;
            gemm(
                [count, rows, inputs],
                (&d_out[first..], 1, outputs),
                (input, inputs, 1),
                d_weight,
            );
        });
    d_bias.fill(0.0);
    for row in d_out.chunks_exact(outputs) {
        d_bias.iter_mut().zip(row).for_each(|(g, d)| *g += d);
    }
    if let Some(d_input) = d_input {
        let per = rows_per_piece(rows, macs);
        d_input
            .par_chunks_mut(per * inputs)
            .zip(d_out.par_chunks(per * outputs))
            .for_each(|(d_input, d_out)| {
                let rows = d_out.len() / outputs;
                gemm(
                    [rows, outputs, inputs],
                    (d_out, outputs, 1),
                    (weight, inputs, 1),
                    d_input,
                );
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each value as [`gemm_into`] promises to sum it, in plain loops.
    fn blockwise_sums(
        [m, k, n]: [usize; 3],
        (a, a_rows, a_cols): (&[f32], usize, usize),
        (b, b_rows, b_cols): (&[f32], usize, usize),
    ) -> Vec<f32> {
        let mut c = vec![0.0f32; m * n];
        for (i, j) in (0..m).flat_map(|i| (0..n).map(move |j| (i, j))) {
            let mut total = 0.0f32;
            for (block, first) in (0..k).step_by(DEPTH_BLOCK).enumerate() {
                let block_sum = (first..k.min(first + DEPTH_BLOCK)).fold(0.0f32, |sum, p| {
                    a[i * a_rows + p * a_cols].mul_add(b[p * b_rows + j * b_cols], sum)
                });
                total = if block == 0 {
                    block_sum
                } else {
                    total + block_sum
                };
            }
            c[i * n + j] = total;
        }
        c
    }

    /// A value drawn evenly from [0, 1), on 24 bits.
    fn uniform(rng: &mut SmallRng) -> f32 {
        (rng.next_u32() >> 8) as f32 / (1 << 24) as f32
    }

    #[test]
    fn products_sum_in_blocks_in_order_whatever_their_shape_or_layout() {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut random = |len: usize| -> Vec<f32> {
            (0..len)
                .map(|i| {
                    let v = uniform(&mut rng) - 0.5;
                    if i % 5 == 0 { 0.0 } else { v }
                })
                .collect()
        };
        let shapes = [
            [1, 784, 128],
            [16, 400, 10],
            [32, 784, 64],
            [70, 1300, 90],
            [33, 513, 17],
            [2, 3, 1],
            [5, 1, 7],
            [3, 2, 4],
            [1, 1, 1],
            [4, 0, 3],
            [200, 1100, 3],
            [3, 513, 5],
            [70, 1026, 90],
        ];
        for [m, k, n] in shapes {
            let (a, b) = (random(m * k), random(k * n));
            for (a_rows, a_cols) in [(k, 1), (1, m)] {
                for (b_rows, b_cols) in [(n, 1), (1, k)] {
                    let (a, b) = ((&a[..], a_rows, a_cols), (&b[..], b_rows, b_cols));
                    let mut c = vec![f32::NAN; m * n];
                    gemm([m, k, n], a, b, &mut c);
                    let layout = [a_rows, a_cols, b_rows, b_cols];
                    let expected = blockwise_sums([m, k, n], a, b);
                    let differing = c.iter().zip(&expected).position(|(c, e)| c != e);
                    assert_eq!(
                        differing, None,
                        "{m}x{k}x{n} {layout:?}: {c:?} {expected:?}"
                    );
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn sums_over_the_nonzero_terms_are_the_gemms_to_the_bit() {
        let mut rng = SmallRng::seed_from_u64(11);
        let mut uniform = move || uniform(&mut rng);
        // [rows, inputs, outputs]: MNIST's first layer one image at a time and in a batch, a
        // ReLU's output into 400, the head of the `cnn` (seven depth blocks), odd widths and
        // a depth whose last block is one term.
        let shapes = [
            [1, 784, 128],
            [9, 784, 128],
            [70, 784, 128],
            [5, 128, 400],
            [3, 400, 10],
            [2, 3136, 128],
            [4, 1025, 20],
            [3, 513, 17],
        ];
        for [rows, inputs, outputs] in shapes {
            // The second depth block all zeros, runs of negative zeros, and mostly zeros
            // elsewhere.
            let input: Vec<f32> = (0..rows * inputs)
                .map(|i| (i % inputs, uniform()))
                .map(|(k, u)| match (k / DEPTH_BLOCK, k / 100 % 3) {
                    (1, _) => 0.0,
                    (_, 0) if u < 0.7 => 0.0,
                    (_, 1) => -0.0,
                    _ => u - 0.5,
                })
                .collect();
            let weight: Vec<f32> = (0..inputs * outputs).map(|_| uniform() - 0.5).collect();
            let mut expected = vec![f32::NAN; rows * outputs];
            gemm(
                [rows, inputs, outputs],
                (&input, inputs, 1),
                (&weight, 1, inputs),
                &mut expected,
            );
            let by_input = InputMajor::of(&weight, [inputs, outputs]);
            let check = |name: &str, sum: unsafe fn(&[f32], &InputMajor, &mut [f32])| {
                let mut out = vec![f32::NAN; rows * outputs];
                // SAFETY: only called where the processor has what `sum` is compiled for.
                unsafe { sum(&input, &by_input, &mut out) };
                assert_eq!(
                    bits(&out),
                    bits(&expected),
                    "{name} {rows}x{inputs}x{outputs}"
                );
            };
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") && has!("fma") {
                check("AVX2", nonzero_terms_avx2);
            }
            let mut out = vec![f32::NAN; rows * outputs];
            let summed = sum_nonzero_terms(&input, &by_input, &mut out);
            assert_eq!(summed, nonzero_terms_summed_here());
            if summed {
                assert_eq!(bits(&out), bits(&expected), "{rows}x{inputs}x{outputs}");
            }
            if has!("avx512f") && has!("avx2") && has!("fma") {
                check("AVX-512", nonzero_terms_avx512);
            }
        }
    }

    #[test]
    fn a_layer_gives_the_same_bits_whichever_way_its_pieces_are_summed() {
        let mut rng = SmallRng::seed_from_u64(5);
        let [inputs, outputs] = [300, 40];
        let weight: Vec<f32> = (0..inputs * outputs)
            .map(|_| uniform(&mut rng) - 0.5)
            .collect();
        let bias: Vec<f32> = (0..outputs).map(|_| uniform(&mut rng) - 0.5).collect();
        let by_input = InputMajor::of(&weight, [inputs, outputs]);
        // Many mostly-zero rows, many dense rows, and a few dense rows: the first and last go
        // over the nonzero terms where the processor allows, the second to the GEMM.
        for (rows, zeros) in [(100, 0.85), (100, 0.0), (3, 0.0)] {
            let input: Vec<f32> = (0..rows * inputs)
                .map(|_| uniform(&mut rng))
                .map(|u| if u < zeros { 0.0 } else { u })
                .collect();
            let layer = |by_input: Option<&InputMajor>| {
                let mut out = vec![f32::NAN; rows * outputs];
                let dims = [inputs, outputs];
                linear_forward(&input, &weight, by_input, &bias, dims, &mut out, f32::tanh);
                out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            };
            assert_eq!(layer(Some(&by_input)), layer(None), "{rows} rows");
        }
    }

    #[test]
    fn a_product_into_columns_leaves_the_other_columns_alone() {
        let [m, k, n, width] = [3, 5, 2, 6];
        let a: Vec<f32> = (0..m * k).map(|v| v as f32).collect();
        let b: Vec<f32> = (0..k * n).map(|v| v as f32 - 4.0).collect();
        let mut c = vec![-1.0; m * width];
        // SAFETY: columns 1..3 of `c`'s three rows of six are this call's alone.
        unsafe {
            gemm_into(
                [m, k, n],
                (&a, k, 1),
                (&b, n, 1),
                c.as_mut_ptr().add(1),
                width,
            )
        };
        let expected = blockwise_sums([m, k, n], (&a, k, 1), (&b, n, 1));
        for (row, values) in c.chunks_exact(width).enumerate() {
            assert_eq!(values[1..3], expected[row * n..(row + 1) * n]);
            assert!(values[..1].iter().chain(&values[3..]).all(|&v| v == -1.0));
        }
    }

    with_avx2! {
        fused FUSED;
        /// Whether this processor's build of the direct convolution fuses its multiply-adds.
        fn direct_convolution_fuses() -> bool {
            FUSED
        }
    }

    /// Values in [-1, 1), a third of them zero (as after a ReLU, or blank pixels), and some
    /// large, so that any change in the order of a sum shows in its bits.
    fn activations(rng: &mut SmallRng, len: usize) -> Vec<f32> {
        (0..len)
            .map(|_| match rng.next_u32() % 21 {
                0..7 => 0.0,
                7 => (uniform(rng) - 0.5) * 2000.0,
                _ => uniform(rng) * 2.0 - 1.0,
            })
            .collect()
    }

    fn bits(values: &[f32]) -> Vec<u32> {
        values.iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn the_direct_convolution_sums_each_value_over_its_taps_in_order() {
        let fused = direct_convolution_fuses();
        let multiply_add = |x: f32, w: f32, s: f32| if fused { x.mul_add(w, s) } else { x * w + s };
        let mut rng = SmallRng::seed_from_u64(3);
        // Output pixel counts that are and are not a multiple of SIDE_BY_SIDE, and kernels
        // whose taps make whole groups (2x2), groups and one more (3x3, 5x5) and less than a
        // group (1x1). Only the per-image loops are tested here, in the build this processor
        // takes; padding is `ConvGeometry::pad`'s, shared with the loops under test.
        for (kernel, padding, height, width) in [
            (3, 1, 28, 28),
            (3, 0, 7, 5),
            (5, 2, 6, 9),
            (5, 0, 5, 5),
            (3, 1, 1, 1),
            (1, 0, 3, 2),
            (2, 1, 4, 3),
        ] {
            for outputs in [16, 32, 48] {
                let conv = ConvGeometry {
                    inputs: 1,
                    outputs,
                    kernel,
                    padding,
                    height,
                    width,
                };
                let mut padded = Vec::new();
                conv.pad(&activations(&mut rng, height * width), &mut padded);
                let packed = activations(&mut rng, kernel * kernel * outputs);
                let bias = activations(&mut rng, outputs);
                let (out_width, padded_width) = (conv.out_width(), conv.padded_width());
                let read = |pixel: usize, tap: usize| {
                    let (oy, ox, ky, kx) = (
                        pixel / out_width,
                        pixel % out_width,
                        tap / kernel,
                        tap % kernel,
                    );
                    padded[(oy + ky) * padded_width + ox + kx]
                };
                let (pixels, taps) = (conv.out_pixels(), kernel * kernel);
                for bias in [None, Some(&bias[..])] {
                    let expected: Vec<f32> = (0..pixels * outputs)
                        .map(|at| {
                            let (pixel, ch) = (at / outputs, at % outputs);
                            let start = bias.map_or(0.0, |bias| bias[ch]);
                            (0..taps).fold(start, |s, tap| {
                                multiply_add(read(pixel, tap), packed[tap * outputs + ch], s)
                            })
                        })
                        .collect();
                    let mut out = vec![f32::NAN; conv.out_len()];
                    direct_forward_image(&conv, &padded, &packed, bias, &mut out);
                    assert_eq!(
                        bits(&out),
                        bits(&expected),
                        "forward {conv:?}, bias {}",
                        bias.is_some()
                    );
                }
                let d_out = activations(&mut rng, conv.out_len());
                let mut grad = activations(&mut rng, taps * outputs);
                let expected: Vec<f32> = (0..taps * outputs)
                    .map(|at| {
                        let (tap, ch) = (at / outputs, at % outputs);
                        (0..pixels).fold(grad[at], |s, pixel| {
                            multiply_add(read(pixel, tap), d_out[pixel * outputs + ch], s)
                        })
                    })
                    .collect();
                direct_weight_gradient_image(&conv, &padded, &d_out, &mut grad);
                assert_eq!(bits(&grad), bits(&expected), "weight gradient {conv:?}");
            }
        }
    }

    #[test]
    fn the_fused_pool_backward_is_the_plain_loops_to_the_bit() {
        let mut rng = SmallRng::seed_from_u64(4);
        for (height, width, channels, images) in [
            (28, 28, 16, 3),
            (14, 14, 32, 2),
            (7, 7, 8, 3),
            (5, 4, 3, 1),
            (4, 5, 6, 2),
            (3, 3, 1, 4),
        ] {
            let pool = PoolGeometry {
                height,
                width,
                channels,
            };
            let input = activations(&mut rng, images * pool.in_len());
            let inv_std: Vec<f32> = activations(&mut rng, channels)
                .iter()
                .map(|v| v.abs() + 0.5)
                .collect();
            let mean = activations(&mut rng, channels);
            let gamma = activations(&mut rng, channels);
            let saved = || NormSaved {
                input: &input,
                mean: &mean,
                inv_std: &inv_std,
                gamma: &gamma,
            };
            let pooled = activations(&mut rng, images * pool.out_len());
            let d_pooled = activations(&mut rng, images * pool.out_len());
            let argmax: Vec<u8> = (0..pooled.len())
                .map(|_| (rng.next_u32() % 4) as u8)
                .collect();

            // Plainly, in the fused pass's order of sums: the gradient that reaches each
            // window's winner through the pooling and the ReLU, and batch norm's sums over
            // the winners, window by window. Shared with the pass under test, so not checked
            // here: the windows' offsets, `channel_sums`, `NormSaved::finish` and batch norm's
            // formula (`NormInputGradient::rows`), which the comparisons with Burn cover.
            let (in_len, out_len) = (pool.in_len(), pool.out_len());
            let through = |out: usize| {
                if pooled[out] > 0.0 {
                    d_pooled[out]
                } else {
                    0.0
                }
            };
            let winner = |image: usize, o: usize, rows: [usize; 4], ch: usize| {
                let out = image * out_len + o + ch;
                (out, image * in_len + rows[argmax[out] as usize] + ch)
            };
            let sums = channel_sums(images, channels, |image, sum, dot| {
                pool.windows(|o, rows| {
                    for c in 0..channels {
                        let (out, at) = winner(image, o, rows, c);
                        sum[c] += through(out);
                        dot[c] += through(out) * (input[at] - mean[c]) * inv_std[c];
                    }
                })
            });
            let (mut d_gamma, mut d_beta) = (vec![f32::NAN; channels], vec![f32::NAN; channels]);
            let gradient = saved().finish(sums, images * height * width, &mut d_gamma, &mut d_beta);
            // Batch norm's input gradient for a zero output gradient everywhere, then each
            // value inside a window given its share of the pooled gradient (zero unless it won).
            let mut expected = vec![f32::NAN; input.len()];
            gradient.rows(&input, None, &mut expected);
            for image in 0..images {
                pool.windows(|o, rows| {
                    for c in 0..channels {
                        let (out, won) = winner(image, o, rows, c);
                        for row in rows {
                            let at = image * in_len + row + c;
                            let share = if at == won && pooled[out] > 0.0 {
                                gradient.coefficient[c] * d_pooled[out]
                            } else {
                                0.0
                            };
                            expected[at] += share;
                        }
                    }
                });
            }

            let (mut fused_d_gamma, mut fused_d_beta) =
                (vec![f32::NAN; channels], vec![f32::NAN; channels]);
            let mut d_input = vec![f32::NAN; input.len()];
            norm_relu_max_pool_backward(
                &pool,
                saved(),
                &pooled,
                &d_pooled,
                &argmax,
                &mut fused_d_gamma,
                &mut fused_d_beta,
                Some(&mut d_input),
            );
            assert_eq!(bits(&fused_d_gamma), bits(&d_gamma), "{pool:?}");
            assert_eq!(bits(&fused_d_beta), bits(&d_beta), "{pool:?}");
            assert_eq!(bits(&d_input), bits(&expected), "{pool:?}");
        }
    }
}
