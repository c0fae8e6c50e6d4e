//! Criterion benches of every core entry point, on the inputs the targets name:
//! a 4 KB chat body, one window record / quantile, a plan over 16 candidates.
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use tiergate_core::policy::{Candidate, Request, Router, CAP_STREAMING, CAP_TOOLS};
use tiergate_core::window::LatencyWindow;
use tiergate_core::{hash, tokens};

const PARAGRAPH: &str = "The quarterly report shows that revenue grew by 12% while \
operating costs fell, mostly because the new routing layer sends simple questions to \
smaller models. Can you summarise the three main drivers, list any risks you see, and \
suggest what we should measure next quarter? Please answer in plain English.\n\n";

/// A chat body of about 4 KB: a system prompt and alternating turns.
fn body_4k() -> Vec<u8> {
    let mut messages =
        vec![serde_json::json!({"role": "system", "content": "You are a careful analyst."})];
    let mut i = 0;
    while serde_json::to_vec(&messages).unwrap().len() < 3900 {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        messages.push(serde_json::json!({"role": role, "content": PARAGRAPH}));
        i += 1;
    }
    serde_json::to_vec(&serde_json::json!({
        "model": "auto", "messages": messages, "temperature": 0.2, "max_tokens": 512, "stream": true
    }))
    .unwrap()
}

fn candidates(n: usize) -> Vec<Candidate> {
    (0..n)
        .map(|i| Candidate {
            name: format!("deployment-{i}"),
            tier: (i / 4) as u32,
            price_in_per_mtok: 0.1 * (i + 1) as f64,
            price_out_per_mtok: 0.4 * (i + 1) as f64,
            price_cached_per_mtok: 0.01,
            context_window: 128_000,
            caps: CAP_TOOLS | CAP_STREAMING,
            ttft_prior_ms: 200.0 + 50.0 * i as f64,
            tpot_prior_ms: 10.0,
            quality_prior: 0.5 + 0.03 * i as f64,
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let body = body_4k();
    c.bench_function("request_key_4k", |b| {
        b.iter(|| hash::request_key(black_box(&body), "tenant"));
    });
    c.bench_function("estimate_tokens_4k", |b| {
        b.iter(|| tokens::estimate_tokens(black_box(&body)));
    });

    let mut w = LatencyWindow::new(300.0, 30).unwrap();
    let mut t = 0.0;
    let mut v = 1.0;
    c.bench_function("window_record", |b| {
        b.iter(|| {
            t += 0.001;
            v = if v > 5000.0 { 1.0 } else { v * 1.01 };
            w.record(black_box(v), t).unwrap();
        });
    });
    c.bench_function("window_quantile_p95", |b| {
        b.iter(|| w.quantile(black_box(0.95), t).unwrap());
    });

    let router = Router::new(candidates(16), 300.0, 20, None).unwrap();
    for i in 0..16 {
        for k in 0..50 {
            router
                .record(i, 150.0 + f64::from(k), 8.0, 900.0, 1.0)
                .unwrap();
        }
    }
    let req = Request {
        required_caps: CAP_TOOLS,
        prompt_tokens: 1200,
        max_output_tokens: 512,
        expected_output_tokens: 200,
        latency_budget_ms: 3000.0,
        max_cost_usd: 0.01,
        min_quality: 0.6,
        allowed_mask: u64::MAX,
        unavailable_mask: 0b100,
        flags: 0,
    };
    c.bench_function("plan_16", |b| {
        b.iter(|| router.plan(black_box(&req), None, 2.0).unwrap());
    });
    c.bench_function("plan_16_after_record", |b| {
        b.iter(|| {
            router.record(3, 160.0, 8.0, 900.0, 2.0).unwrap();
            router.plan(black_box(&req), None, 2.0).unwrap()
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
