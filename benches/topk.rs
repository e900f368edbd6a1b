//! What one `TopK::offer` costs, by stream shape and capacity.
//!
//! `cargo bench --bench topk`. Each iteration offers one key of weight 1,
//! so the time per iteration is the time per offer. Keys are IPv4 /24s as
//! the attack detector would count them (`u32` network bits).
//!
//! * `zipf_k64`, `zipf_k1024`: a skewed stream, Zipf-like over a million
//!   /24s (rank r drawn with probability proportional to 1/r; 2^16 offers
//!   drawn beforehand and replayed): most offers hit, the tail misses and
//!   churns the smallest entries. The share of hits is printed first.
//! * `distinct_k64`, `distinct_k1024`: every key new, so every offer
//!   replaces the smallest entry: the worst case.
//! * `hot_k1024`: one key, so every offer hits: the best case.

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use floodguard::TopK;

/// Offers in the replayed stream: a power of two, to wrap with a mask.
const STREAM: usize = 1 << 16;
/// Distinct keys of the Zipf-like stream.
const UNIVERSE: u64 = 1 << 20;

/// A /24 as the detector would key it: the network bits of an IPv4
/// address. Ranks are scattered over the address space, so neighbouring
/// ranks do not hash alike.
fn slash24(rank: u64) -> u32 {
    (rank.wrapping_mul(0x9E37_79B9) as u32) & 0xFFFF_FF00
}

/// Ranks with P(r) proportional to 1/r over 1..=UNIVERSE, drawn by inverting
/// the continuous approximation of the harmonic CDF: r = UNIVERSE^u.
fn zipf_stream() -> Vec<u32> {
    let mut rng = fastrand::Rng::with_seed(7);
    let ln = (UNIVERSE as f64).ln();
    (0..STREAM)
        .map(|_| {
            let rank = ((rng.f64() * ln).exp() as u64).clamp(1, UNIVERSE);
            slash24(rank)
        })
        .collect()
}

/// Keys of the all-distinct stream: the `i`th /24 of a walk through all
/// 2^24 of them, so a key comes back only after 2^24 offers, long after any
/// sketch benchmarked here has forgotten it.
fn distinct(i: u64) -> u32 {
    (i as u32).wrapping_mul(0x9E37_79B1) << 8
}

fn bench(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    k: usize,
    mut key: impl FnMut(u64) -> u32,
) {
    let mut t = TopK::new(k).unwrap();
    let mut i = 0u64;
    g.bench_function(name, |b| {
        b.iter(|| {
            t.offer(black_box(key(i)), 1);
            i += 1;
        })
    });
    black_box(t.top(10));
}

fn offer(c: &mut Criterion) {
    let zipf = zipf_stream();
    let zipf_key = |i: u64| zipf[i as usize & (STREAM - 1)];
    // The share of offers that hit once the sketch has seen the stream, for
    // the record.
    for k in [64, 1024] {
        let mut t = TopK::new(k).unwrap();
        zipf.iter().for_each(|&key| t.offer(key, 1));
        let hits = zipf.iter().filter(|&&key| {
            let hit = t.get(&key).is_some();
            t.offer(key, 1);
            hit
        });
        let share = 100.0 * hits.count() as f64 / STREAM as f64;
        eprintln!("zipf, k = {k}: {share:.1}% of offers hit");
    }

    let mut g = c.benchmark_group("topk_offer");
    g.throughput(Throughput::Elements(1));
    bench(&mut g, "zipf_k64", 64, zipf_key);
    bench(&mut g, "zipf_k1024", 1024, zipf_key);
    bench(&mut g, "distinct_k64", 64, distinct);
    bench(&mut g, "distinct_k1024", 1024, distinct);
    bench(&mut g, "hot_k1024", 1024, |_| slash24(1));
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = offer
}
criterion_main!(benches);
