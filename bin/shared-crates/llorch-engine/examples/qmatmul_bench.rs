//! Microbenchmark of the engine's quantized matmul kernels: GMAC/s per weight type and number
//! of activation rows, on random weights of a model's shapes (best of several repetitions, so a
//! shared machine disturbs it less than a whole forward pass).
//!
//! usage: target/release/examples/qmatmul_bench [TYPE ...]   (q4_1 q5_0 q8_0 q4_k q5_k q6_k;
//! default all; RAYON_NUM_THREADS sets the threads)

use std::time::Instant;

use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{Device, Tensor};
use llorch_engine::model::qmatmul::{
    BlockQ4K, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ6K, BlockQ8_0, OwnMatrix, WeightBlock,
};

/// Random GGUF blocks of `n × k` with small finite f16 scales (every f16 field of every block
/// type lies at one of these offsets or is overwritten harmlessly).
fn weights<B: WeightBlock>(n: usize, k: usize) -> QTensor {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let per_row = k / B::QK * B::BYTES;
    let mut bytes: Vec<u8> = (0..n * per_row).map(|_| next() as u8).collect();
    let scale = half::f16::from_f32(0.01).to_le_bytes();
    let fields: &[usize] = match B::DTYPE {
        GgmlDType::Q6K => &[208],
        GgmlDType::Q5_0 | GgmlDType::Q8_0 => &[0],
        _ => &[0, 2],
    };
    for block in bytes.chunks_exact_mut(B::BYTES) {
        for &o in fields {
            block[o..o + 2].copy_from_slice(&scale);
        }
    }
    let storage = QStorage::from_data(std::borrow::Cow::Owned(bytes), &Device::Cpu, B::DTYPE)
        .expect("storage");
    QTensor::new(storage, (n, k)).expect("qtensor")
}

fn bench<B: WeightBlock>(name: &str, n: usize, k: usize) -> anyhow::Result<()> {
    let m = OwnMatrix::from_qtensor(&weights::<B>(n, k))?.expect("a kernel type");
    for rows in [1usize, 8, 64, 512] {
        let x: Vec<f32> = (0..rows * k)
            .map(|i| ((i % 61) as f32 - 30.0) / 7.0)
            .collect();
        let x = Tensor::from_vec(x, (rows, k), &Device::Cpu)?;
        let reps = (2_000_000_000 / (rows * n * k)).clamp(3, 2000);
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            for _ in 0..reps {
                m.forward(&x)?;
            }
            best = best.min(t.elapsed().as_secs_f64() / reps as f64);
        }
        let gmac = (rows * n * k) as f64 / best / 1e9;
        println!(
            "{name:5} {k:5}→{n:<5} rows {rows:4}: {:9.1} µs  {gmac:6.1} GMAC/s",
            best * 1e6
        );
    }
    // one row with the weights coming from memory, as in decode: enough copies to pass 64 MB
    let copies = (64 << 20) / m.allocated_bytes().max(1) + 1;
    let mats = (0..copies)
        .map(|_| OwnMatrix::from_qtensor(&weights::<B>(n, k)).map(|m| m.expect("kernel")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let x = Tensor::from_vec(vec![0.5f32; k], (1, k), &Device::Cpu)?;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        for m in &mats {
            m.forward(&x)?;
        }
        best = best.min(t.elapsed().as_secs_f64() / copies as f64);
    }
    println!(
        "{name:5} {k:5}→{n:<5} rows    1 from memory: {:9.1} µs  {:6.1} GB/s of weights",
        best * 1e6,
        m.allocated_bytes() as f64 / best / 1e9
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let wanted: Vec<String> = std::env::args().skip(1).collect();
    let on = |t: &str| wanted.is_empty() || wanted.iter().any(|w| w == t);
    if on("q4_1") {
        bench::<BlockQ4_1>("q4_1", 3072, 576)?;
        bench::<BlockQ4_1>("q4_1", 576, 576)?;
        bench::<BlockQ4_1>("q4_1", 640, 2048)?;
    }
    if on("q5_0") {
        bench::<BlockQ5_0>("q5_0", 4096, 640)?;
    }
    if on("q8_0") {
        bench::<BlockQ8_0>("q8_0", 4096, 640)?;
    }
    if on("q4_k") {
        bench::<BlockQ4K>("q4_k", 640, 2048)?;
        bench::<BlockQ4K>("q4_k", 3072, 768)?;
    }
    if on("q5_k") {
        bench::<BlockQ5K>("q5_k", 640, 2048)?;
    }
    if on("q6_k") {
        bench::<BlockQ6K>("q6_k", 640, 2048)?;
    }
    Ok(())
}
