use criterion::{criterion_group, criterion_main, Criterion};

fn version(c: &mut Criterion) {
    c.bench_function("version", |b| {
        b.iter(|| std::hint::black_box(tiergate_core::VERSION).len())
    });
}

criterion_group!(benches, version);
criterion_main!(benches);
