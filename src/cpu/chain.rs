//! Training passes of a chain of fully connected layers on small batches, on two cores.
//!
//! The tutorial's MLP at batch 32 is eight products of tens of microseconds each and an
//! optimizer update per step, too small to hand to rayon ([`super::pair`]). Here each layer's
//! outputs are cut in two: one side of the [`pair`] computes the first half of the layer's
//! output columns with the first half of its weight's rows, the other side the rest, and the
//! sides keep those rows from step to step (the backward pass takes each side's rows of the
//! weight gradient, the optimizer updates them on the same side), so each core keeps its half
//! of the weights and their moments in its own cache. What crosses between the cores is each
//! layer's output, a few kilobytes.
//!
//! Every product runs in the same pieces whether one core computes both sides or two do, so
//! training gives the same bits on any number of threads.

use std::marker::PhantomData;
use std::ops::Range;

use super::pair::{self, Cores, Phase, Side};
use super::{Parameter, Step, Unary, kernels, relu, sigmoid};
use super::{relu_derivative, sigmoid_derivative, tanh_derivative};

/// Layers with fewer outputs than this are not cut: the first side computes them whole (the
/// 10 logits), as a product cut that thin runs far below the GEMM's rate.
const CUT_FROM: usize = 64;

/// One fully connected layer of a chain and the activation after it.
pub(super) struct Link {
    /// Its index among the network's steps: its output (before the activation) is the next
    /// buffer, the activation's the one after.
    step: usize,
    inputs: usize,
    outputs: usize,
    weight: usize,
    bias: usize,
    activation: Option<Unary>,
    /// The first output column (and weight row) of the second side's half.
    cut: usize,
}

impl Link {
    fn columns(&self, side: Side) -> Range<usize> {
        match side {
            Side::First => 0..self.cut,
            Side::Second => self.cut..self.outputs,
        }
    }
}

/// The links of `steps` when they are fully connected layers each followed by at most one
/// activation, ending with a layer: a network this module trains.
pub(super) fn links(steps: &[Step]) -> Option<Vec<Link>> {
    let mut links = Vec::new();
    let mut rest = steps;
    while let [Step::Linear(dense), after @ ..] = rest {
        let activation = match after.first() {
            Some(Step::Activation(unary)) => Some(*unary),
            _ => None,
        };
        let step = steps.len() - rest.len();
        rest = &after[usize::from(activation.is_some())..];
        links.push(Link {
            step,
            inputs: dense.inputs,
            outputs: dense.outputs,
            weight: dense.weight,
            bias: dense.bias,
            activation,
            cut: if dense.outputs >= CUT_FROM {
                dense.outputs / 2
            } else {
                dense.outputs
            },
        });
    }
    let ends_with_a_layer = links.last().is_some_and(|link| link.activation.is_none());
    (rest.is_empty() && ends_with_a_layer).then_some(links)
}

/// Whether a batch of `images` is small enough for the chain's passes: every product below
/// the size at which the engine splits it over rayon's threads by rows instead.
pub(super) fn takes(links: &[Link], images: usize) -> bool {
    let largest = links.iter().map(|link| link.inputs * link.outputs).max();
    images > 0 && images * largest.unwrap_or(0) < kernels::SPLIT_PRODUCTS_ABOVE
}

/// Where each parameter of the chain is cut between the sides: the first value of the second
/// side's part (a bias's cut is its layer's; a weight's, that row's first value).
pub(super) fn parameter_cuts(links: &[Link], params: &[Parameter]) -> Vec<usize> {
    let mut cuts: Vec<usize> = params.iter().map(|p| p.value.len()).collect();
    for link in links {
        cuts[link.weight] = link.cut * link.inputs;
        cuts[link.bias] = link.cut;
    }
    cuts
}

/// A buffer both sides write during a phase, each its own part of it, borrowed for as long as
/// the phases that write it run.
#[derive(Clone, Copy)]
struct SplitBuffer<'a> {
    ptr: *mut f32,
    len: usize,
    _borrow: PhantomData<&'a mut [f32]>,
}

// SAFETY: the phases below give each side disjoint parts of a buffer to write, and no side
// reads a part another writes until the phase after.
unsafe impl Send for SplitBuffer<'_> {}
unsafe impl Sync for SplitBuffer<'_> {}

impl<'a> SplitBuffer<'a> {
    fn new(buffer: &'a mut [f32]) -> Self {
        Self {
            ptr: buffer.as_mut_ptr(),
            len: buffer.len(),
            _borrow: PhantomData,
        }
    }

    /// The first `len` values, as a buffer of their own.
    fn first(self, len: usize) -> Self {
        assert!(len <= self.len);
        Self { len, ..self }
    }

    /// # Safety
    /// No other side may touch `range` during the phase.
    #[allow(clippy::mut_from_ref)]
    unsafe fn part(&self, range: Range<usize>) -> &mut [f32] {
        assert!(range.start <= range.end && range.end <= self.len);
        // SAFETY: in bounds, as just checked; the caller vouches for exclusive use.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(range.start), range.len()) }
    }

    /// # Safety
    /// No side may write any of the buffer during the phase.
    unsafe fn all(&self) -> &[f32] {
        // SAFETY: the caller vouches that nothing writes it meanwhile.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// Columns `columns` of every row of a `[rows, width]` matrix: each row's part in turn.
    ///
    /// # Safety
    /// No other side may touch those columns during the phase.
    unsafe fn columns(
        &self,
        width: usize,
        columns: Range<usize>,
    ) -> impl Iterator<Item = &mut [f32]> + '_ {
        (0..self.len / width).map(move |row| {
            let start = row * width;
            // SAFETY: passed on from the caller.
            unsafe { self.part(start + columns.start..start + columns.end) }
        })
    }

    /// [`kernels::gemm_into`] into columns `columns.start..columns.start + n` of this
    /// `[m, width]` matrix.
    ///
    /// # Safety
    /// No other side may touch those columns during the phase.
    unsafe fn gemm_into_columns(
        &self,
        [m, k, n]: [usize; 3],
        a: (&[f32], usize, usize),
        b: (&[f32], usize, usize),
        width: usize,
        first_column: usize,
    ) {
        assert!(first_column + n <= width && m * width <= self.len);
        // SAFETY: every row's `n` values lie inside the buffer, as just checked; the caller
        // vouches for exclusive use.
        unsafe { kernels::gemm_into([m, k, n], a, b, self.ptr.add(first_column), width) }
    }
}

/// The training forward pass: `outputs[0]` holds the (normalised) input; each layer's output
/// and its activation's go to the buffers after it, as the engine's other passes keep them.
/// Returns the cores it ran on.
pub(super) fn forward(
    cores: Cores,
    links: &[Link],
    params: &[Parameter],
    outputs: &mut [Vec<f32>],
) -> Cores {
    let images = outputs[0].len() / links[0].inputs;
    for link in links {
        outputs[link.step + 1].resize(images * link.outputs, 0.0);
        if link.activation.is_some() {
            outputs[link.step + 2].resize(images * link.outputs, 0.0);
        }
    }
    let buffers: Vec<SplitBuffer> = outputs.iter_mut().map(|b| SplitBuffer::new(b)).collect();
    let phases: Vec<_> = links
        .iter()
        .map(|link| {
            let buffers = &buffers;
            move |side: Side| {
                let columns = link.columns(side);
                if columns.is_empty() {
                    return;
                }
                let weight = &params[link.weight].value;
                let bias = &params[link.bias].value[columns.clone()];
                let output = buffers[link.step + 1];
                // SAFETY: the layer's input was written in an earlier phase, and this side
                // alone writes these columns of the outputs in this one.
                unsafe {
                    let input = buffers[link.step].all();
                    output.gemm_into_columns(
                        [images, link.inputs, columns.len()],
                        (input, link.inputs, 1),
                        (&weight[columns.start * link.inputs..], 1, link.inputs),
                        link.outputs,
                        columns.start,
                    );
                    let rows = output.columns(link.outputs, columns.clone());
                    match link.activation {
                        None => rows.for_each(|row| add(row, bias)),
                        Some(unary) => {
                            let activated = buffers[link.step + 2].columns(link.outputs, columns);
                            for (row, activated) in rows.zip(activated) {
                                add(row, bias);
                                match unary {
                                    Unary::Relu => map(row, activated, relu),
                                    Unary::Sigmoid => map(row, activated, sigmoid),
                                    Unary::Tanh => map(row, activated, f32::tanh),
                                }
                            }
                        }
                    }
                }
            }
        })
        .collect();
    let phases: Vec<Phase> = phases.iter().map(|phase| phase as Phase).collect();
    pair::run(cores, &phases)
}

/// The backward pass from the logits' gradient: every weight's and bias's gradient, each
/// side its rows, with `deltas` for the gradients of the layers' outputs in between. Returns
/// the cores it ran on.
pub(super) fn backward(
    cores: Cores,
    links: &[Link],
    params: &mut [Parameter],
    outputs: &[Vec<f32>],
    d_logits: &[f32],
    deltas: &mut [Vec<f32>; 2],
) -> Cores {
    let images = d_logits.len() / links[links.len() - 1].outputs;
    // The inputs' gradients above the first layer (the network's input needs none).
    let widest = links[1..].iter().map(|link| link.inputs).max().unwrap_or(0);
    for delta in deltas.iter_mut() {
        if delta.len() < images * widest {
            delta.resize(images * widest, 0.0);
        }
    }
    let [even, odd] = deltas;
    let deltas = [SplitBuffer::new(even), SplitBuffer::new(odd)];
    let (weights, grads): (Vec<&[f32]>, Vec<SplitBuffer>) = params
        .iter_mut()
        .map(|p| (&p.value[..], SplitBuffer::new(&mut p.grad)))
        .unzip();
    // Link `i` (counted from the top) reads the gradient of its output from `deltas[i % 2]`
    // (the logits' from `d_logits`) and writes its input's to the other one.
    let phases: Vec<_> = links
        .iter()
        .enumerate()
        .rev()
        .map(|(index, link)| {
            let from_top = links.len() - 1 - index;
            let below = index.checked_sub(1).map(|i| &links[i]);
            let (deltas, weights, grads) = (&deltas, &weights, &grads);
            move |side: Side| {
                let rows = link.columns(side);
                let weight = weights[link.weight];
                // SAFETY: the gradient of this layer's output was written in an earlier
                // phase (or is `d_logits`), and this side alone writes its rows of the
                // weight's and bias's gradients, and its columns of the input's gradient.
                unsafe {
                    let d_out = match from_top {
                        0 => d_logits,
                        _ => &deltas[from_top % 2].all()[..images * link.outputs],
                    };
                    let input = &outputs[link.step];
                    if !rows.is_empty() {
                        let [from, to] = [rows.start, rows.end].map(|r| r * link.inputs);
                        kernels::gemm(
                            [rows.len(), images, link.inputs],
                            (&d_out[rows.start..], 1, link.outputs),
                            (input, link.inputs, 1),
                            grads[link.weight].part(from..to),
                        );
                        let d_bias = grads[link.bias].part(rows.clone());
                        d_bias.fill(0.0);
                        for row in d_out.chunks_exact(link.outputs) {
                            add(d_bias, &row[rows.clone()]);
                        }
                    }
                    let Some(below) = below else { return };
                    let columns = below.columns(side);
                    if columns.is_empty() {
                        return;
                    }
                    let d_input = deltas[(from_top + 1) % 2].first(images * link.inputs);
                    d_input.gemm_into_columns(
                        [images, link.outputs, columns.len()],
                        (d_out, link.outputs, 1),
                        (&weight[columns.start..], link.inputs, 1),
                        link.inputs,
                        columns.start,
                    );
                    let Some(unary) = below.activation else {
                        return;
                    };
                    // The derivative of the activation below, from its output.
                    let rows = d_input.columns(link.inputs, columns.clone());
                    let activated = outputs[below.step + 2].chunks_exact(link.inputs);
                    for (d, y) in rows.zip(activated) {
                        let y = &y[columns.clone()];
                        match unary {
                            Unary::Relu => scale(d, y, relu_derivative),
                            Unary::Sigmoid => scale(d, y, sigmoid_derivative),
                            Unary::Tanh => scale(d, y, tanh_derivative),
                        }
                    }
                }
            }
        })
        .collect();
    let phases: Vec<Phase> = phases.iter().map(|phase| phase as Phase).collect();
    pair::run(cores, &phases)
}

// Loops over one row's part, on the side's own thread: `kernels::map` and its kin would hand
// the work to rayon's pool, which is what this module exists to avoid.

fn add(values: &mut [f32], addends: &[f32]) {
    values.iter_mut().zip(addends).for_each(|(v, a)| *v += a);
}

fn map(input: &[f32], out: &mut [f32], f: impl Fn(f32) -> f32) {
    out.iter_mut().zip(input).for_each(|(o, &v)| *o = f(v));
}

fn scale(d: &mut [f32], y: &[f32], f: impl Fn(f32, f32) -> f32) {
    d.iter_mut().zip(y).for_each(|(d, &y)| *d = f(*d, y));
}
