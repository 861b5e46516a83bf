//! Each kernel (scalar reference and AVX2) against candle's dequantized weights, on random
//! blocks (random bits, so every 4-/5-/6-bit value and packed scale occurs) plus a row of all-one
//! bits and a row of all-zero bits, and activation rows with an outlier, all zeros, one repeated
//! negative value and tiny values.
//!
//! Tolerances: with the kernel's own quantized activations the result is exact up to f32
//! rounding, so `|got - want| ≤ 2e-5 · max|w_row| · Σ|x|`; against the f32 activations the
//! extra error is the activation rounding, at most half a step per value: `Σ|w|·|d_x|/2`.

use candle_core::quantized::QStorage;
use half::f16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

/// Byte offsets of the f16 scales in one GGUF block of `dtype`.
fn f16_fields(dtype: GgmlDType) -> &'static [usize] {
    match dtype {
        GgmlDType::Q4_1 | GgmlDType::Q4K | GgmlDType::Q5K => &[0, 2],
        GgmlDType::Q5_0 | GgmlDType::Q8_0 => &[0],
        GgmlDType::Q6K => &[208],
        _ => unreachable!(),
    }
}

/// GGUF bytes of `n × k` random weights: row 0 all one bits, row 1 all zero bits, then random
/// bits; f16 scales are finite, of either sign, 1e-4..1e-1 in magnitude.
fn random_weights<B: WeightBlock>(rng: &mut StdRng, n: usize, k: usize) -> QTensor {
    let per_row = k / B::QK * B::BYTES;
    let mut bytes: Vec<u8> = (0..n * per_row).map(|_| rng.random()).collect();
    bytes[..per_row].fill(0xFF);
    bytes[per_row..2 * per_row].fill(0);
    for block in bytes.chunks_exact_mut(B::BYTES) {
        for &o in f16_fields(B::DTYPE) {
            let mag = 10f32.powf(rng.random_range(-4.0..-1.0));
            let v = if rng.random::<bool>() { mag } else { -mag };
            block[o..o + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
        }
    }
    let storage = QStorage::from_data(std::borrow::Cow::Owned(bytes), &Device::Cpu, B::DTYPE)
        .expect("storage");
    QTensor::new(storage, (n, k)).expect("qtensor")
}

/// `m = 15` activation rows (eight go through `dot8`, four through `dot4`, three through `dot1`).
fn activations(rng: &mut StdRng, k: usize) -> Vec<Vec<f32>> {
    let uniform =
        |rng: &mut StdRng| -> Vec<f32> { (0..k).map(|_| rng.random_range(-2.0f32..2.0)).collect() };
    let mut outlier = uniform(rng);
    outlier[k / 3] = 60.0;
    vec![
        uniform(rng),
        outlier,
        vec![0.0; k],
        vec![-0.5; k],
        uniform(rng).iter().map(|v| v * 1e-20).collect(),
        uniform(rng),
        uniform(rng),
        uniform(rng),
        uniform(rng).iter().map(|v| v * 1e3).collect(),
        uniform(rng),
        vec![1.0; k],
        uniform(rng),
        uniform(rng),
        uniform(rng),
        uniform(rng),
    ]
}

fn quantized<A: ActBlock>(x: &[f32]) -> Vec<A> {
    let mut q = vec![A::ZERO; x.len() / A::QK];
    A::quantize(x, &mut q);
    q
}

/// A kernel under test: its name and its forward pass.
type Run<'a> = (&'static str, Box<dyn Fn(&Tensor) -> Tensor + 'a>);

/// The row-by-row kernels of `B` (scalar and, where the CPU has them, AVX2).
fn check<B: WeightBlock>(k: usize) {
    let mut rng = StdRng::seed_from_u64(B::BYTES as u64 * 1000 + k as u64);
    let q = random_weights::<B>(&mut rng, 19, k);
    let mat = &QMatrix::<B>::from_qtensor(&q).unwrap();
    let scalar = Kernels {
        dot1: B::dot_scalar,
        dot4: scalar4::<B>,
        dot8: scalar8::<B>,
    };
    let mut runs: Vec<Run> = vec![(
        "scalar",
        Box::new(move |x| mat.forward_with(x, scalar).unwrap()),
    )];
    match B::simd() {
        Some(s) => runs.push(("avx2", Box::new(move |x| mat.forward_with(x, s).unwrap()))),
        None => assert!(!available(), "{:?}: no AVX2 kernel", B::DTYPE),
    }
    check_runs::<B::Act>(&mut rng, &q, runs, |ids| mat.rows(ids).unwrap());
}

/// The row-group kernels of `G` (scalar and, where the CPU has them, AVX2); 19 rows, so the
/// last group is padded.
fn check_group<G: RowGroup>(k: usize) {
    let mut rng = StdRng::seed_from_u64(G::Block::BYTES as u64 * 1000 + k as u64);
    let q = random_weights::<G::Block>(&mut rng, 19, k);
    let mat = &GroupMatrix::<G>::from_qtensor(&q).unwrap();
    let scalar = group::GroupKernels {
        dot1: |w, x| group::scalar::<G, 1>(w, [x])[0],
        dot4: group::scalar::<G, 4>,
    };
    let mut runs: Vec<Run> = vec![(
        "scalar",
        Box::new(move |x| mat.forward_with(x, scalar).unwrap()),
    )];
    match G::simd() {
        Some(s) => runs.push(("avx2", Box::new(move |x| mat.forward_with(x, s).unwrap()))),
        None => assert!(!available(), "{:?}: no AVX2 kernel", G::Block::DTYPE),
    }
    check_runs::<group::Act<G>>(&mut rng, &q, runs, |ids| mat.rows(ids).unwrap());
}

/// Every run against the dequantized weights, each activation row alone equal to the same row
/// in the batch, and the embedding rows equal to candle's dequantized rows.
fn check_runs<A: ActBlock>(
    rng: &mut StdRng,
    q: &QTensor,
    runs: Vec<Run>,
    rows: impl Fn(&[u32]) -> Tensor,
) {
    let dtype = q.dtype();
    let k = q.shape().dims2().unwrap().1;
    let deq = q
        .dequantize(&Device::Cpu)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let xs = activations(rng, k);
    let xt = Tensor::new(xs.clone(), &Device::Cpu).unwrap();
    for (name, forward) in runs {
        let got = forward(&xt).to_vec2::<f32>().unwrap();
        // each row alone (dot1) gives what it gives in a group of eight or four, bit for bit
        for (i, x) in xs.iter().enumerate() {
            let alone = forward(&Tensor::new(x.as_slice(), &Device::Cpu).unwrap());
            assert_eq!(
                alone.to_vec1::<f32>().unwrap(),
                got[i],
                "{dtype:?} {name} row {i}"
            );
        }
        for (i, x) in xs.iter().enumerate() {
            let xq: Vec<f32> = quantized::<A>(x).iter().flat_map(|b| b.values()).collect();
            let steps: Vec<f32> = xq_steps::<A>(x);
            let sum_abs_x: f64 = x.iter().map(|v| v.abs() as f64).sum();
            for (j, w) in deq.iter().enumerate() {
                let g = got[i][j] as f64;
                let exact: f64 = w.iter().zip(&xq).map(|(a, b)| *a as f64 * *b as f64).sum();
                let wmax = w.iter().fold(0f64, |a, v| a.max(v.abs() as f64));
                let tol = 2e-5 * wmax * sum_abs_x + 1e-30;
                assert!(
                    (g - exact).abs() <= tol,
                    "{dtype:?} {name} k={k} row {i} col {j}: {g} vs {exact} (tol {tol})"
                );
                // against the unquantized activations: at most half a step per value
                let f32_ref: f64 = w.iter().zip(x).map(|(a, b)| *a as f64 * *b as f64).sum();
                let bound: f64 = w
                    .iter()
                    .zip(&steps)
                    .map(|(a, s)| a.abs() as f64 * s.abs() as f64 * 0.5)
                    .sum::<f64>()
                    * 1.001
                    + tol;
                assert!(
                    (g - f32_ref).abs() <= bound,
                    "{dtype:?} {name} k={k} row {i} col {j}: {g} vs f32 {f32_ref} (bound {bound})"
                );
            }
        }
    }
    // embedding rows equal candle's dequantized weights, bit for bit
    let got = rows(&[3, 0, 1, 18]).to_vec2::<f32>().unwrap();
    for (g, want) in got.iter().zip([3, 0, 1, 18]) {
        assert_eq!(g, &deq[want], "{dtype:?} rows");
    }
}

/// The quantization step of each activation value (its block's scale).
fn xq_steps<A: ActBlock>(x: &[f32]) -> Vec<f32> {
    quantized::<A>(x)
        .iter()
        .flat_map(|b| {
            let v = b.values();
            // a block's values are integers times its step; the largest |q| is 127 unless all are 0
            let step = v.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0;
            std::iter::repeat_n(step, A::QK)
        })
        .collect()
}

#[test]
fn q4_1_kernel_matches_dequantized() {
    check_group::<GroupQ4_1>(96);
    check_group::<GroupQ4_1>(512);
}

#[test]
fn q5_0_kernel_matches_dequantized() {
    check_group::<GroupQ5_0>(96);
    check_group::<GroupQ5_0>(640);
}

#[test]
fn q8_0_kernel_matches_dequantized() {
    check_group::<GroupQ8_0>(96);
    check_group::<GroupQ8_0>(512);
}

#[test]
fn row_groups_unpack_to_the_stored_blocks() {
    fn roundtrip<G: RowGroup>() {
        let mut rng = StdRng::seed_from_u64(3);
        let qk = G::Block::QK;
        let q = random_weights::<G::Block>(&mut rng, 8, 2 * qk);
        let data = q.data().unwrap();
        let blocks: Vec<G::Block> = data
            .chunks_exact(G::Block::BYTES)
            .map(G::Block::read)
            .collect();
        // rows 0..8, block 1 of each (two blocks per row)
        let rows: [G::Block; 8] = std::array::from_fn(|i| blocks[2 * i + 1]);
        let g = G::pack(&rows);
        for (i, want) in rows.iter().enumerate() {
            let (mut a, mut b) = (vec![0f32; qk], vec![0f32; qk]);
            g.unpack(i).dequant(&mut a);
            want.dequant(&mut b);
            assert_eq!(a, b, "{:?} row {i}", G::Block::DTYPE);
        }
    }
    roundtrip::<GroupQ4_1>();
    roundtrip::<GroupQ5_0>();
    roundtrip::<GroupQ8_0>();
    roundtrip::<GroupQ4K>();
    roundtrip::<GroupQ6K>();
}

#[test]
fn q4_k_kernel_matches_dequantized() {
    check_group::<GroupQ4K>(256);
    check_group::<GroupQ4K>(1024);
}

#[test]
fn q5_k_kernel_matches_dequantized() {
    check::<BlockQ5K>(256);
    check::<BlockQ5K>(1536);
}

#[test]
fn q6_k_kernel_matches_dequantized() {
    check_group::<GroupQ6K>(256);
    check_group::<GroupQ6K>(2048);
}

#[test]
fn q8_k_activations_follow_llama_cpp() {
    let mut x: Vec<f32> = (0..512)
        .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
        .collect();
    x[7] = -3.0; // the largest magnitude is negative: it maps to -127, the scale is positive
    x[300] = 2.5;
    let q = quantized::<BlockQ8K>(&x);
    assert_eq!(q[0].qs[7], -127);
    assert!((q[0].d - 3.0 / 127.0).abs() < 1e-7);
    assert_eq!(q[1].qs[300 - 256], -127);
    assert!(q[1].d < 0.0);
    for b in &q {
        for (g, s) in b.bsums.iter().enumerate() {
            let want: i32 = b.qs[16 * g..16 * g + 16].iter().map(|&v| v as i32).sum();
            assert_eq!(*s as i32, want);
        }
    }
}

#[test]
fn concatenated_matrices_compute_the_parts() {
    let mut rng = StdRng::seed_from_u64(7);
    let a = random_weights::<BlockQ4K>(&mut rng, 5, 512);
    let b = random_weights::<BlockQ4K>(&mut rng, 9, 512);
    let x = Tensor::new(activations(&mut rng, 512), &Device::Cpu).unwrap();
    let own = |q: &QTensor| OwnMatrix::from_qtensor(q).unwrap().unwrap();
    let both = OwnMatrix::concat(vec![own(&a), own(&b)]).unwrap();
    assert_eq!(both.dtype(), GgmlDType::Q4K);
    let got = both.forward(&x).unwrap();
    let want = Tensor::cat(
        &[own(&a).forward(&x).unwrap(), own(&b).forward(&x).unwrap()],
        1,
    )
    .unwrap();
    let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap();
    assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
    // row groups: parts of 5 and 9 rows are regrouped across the seam
    let a = random_weights::<BlockQ5_0>(&mut rng, 5, 64);
    let b = random_weights::<BlockQ5_0>(&mut rng, 9, 64);
    let x = Tensor::new(activations(&mut rng, 64), &Device::Cpu).unwrap();
    let both = OwnMatrix::concat(vec![own(&a), own(&b)]).unwrap();
    let want = Tensor::cat(
        &[own(&a).forward(&x).unwrap(), own(&b).forward(&x).unwrap()],
        1,
    )
    .unwrap();
    let diff = (both.forward(&x).unwrap() - want).unwrap().abs().unwrap();
    assert_eq!(diff.max_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
    // different types do not concatenate
    let c = random_weights::<BlockQ6K>(&mut rng, 3, 512);
    assert!(OwnMatrix::concat(vec![own(&a), own(&c)]).is_err());
}
