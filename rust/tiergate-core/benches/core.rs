//! Criterion benches of every core entry point, on the inputs the targets name:
//! a 4 KB chat body, one window record / quantile, a plan over 16 candidates, scoring
//! a 2 KB prompt with a gated quality model of 11 families.
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use tiergate_core::features::Doc;
use tiergate_core::policy::{Candidate, Request, Router, CAP_STREAMING, CAP_TOOLS};
use tiergate_core::quality::QualityModel;
use tiergate_core::window::LatencyWindow;
use tiergate_core::{hash, tokens};

/// The 4 KB body (3911 bytes, also read by `benches/bench_core.py` and the token
/// tests): a system prompt, a user turn with a `name`, an assistant tool call whose
/// `arguments` is escaped JSON, the tool's escaped-JSON answer, assistant replies with
/// `\n`, `\"` and `\uXXXX` escapes (as `json.dumps` writes non-ASCII), one tool, fields in
/// client order.
fn body_4k() -> Vec<u8> {
    include_bytes!("body_4k.json").to_vec()
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

/// A gated (version 4) model the shape of the trained one (`benches/bench_classifier.py`):
/// default features (2^16 buckets), 6 latent scores (3 gate logits, 3 difficulty
/// scores), 11 families, 40 000 non-zero rows, a cost model per cluster. The weights are arbitrary: the cost of
/// scoring does not depend on them.
fn gated_model() -> QualityModel {
    let (h, k, rows) = (6usize, 11usize, 40_000usize);
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    let list = |n: usize, f: &mut dyn FnMut() -> f64| {
        (0..n)
            .map(|_| format!("{:.4}", f()))
            .collect::<Vec<_>>()
            .join(",")
    };
    let idx: Vec<String> = (0..rows).map(|r| (r * 65_548 / rows).to_string()).collect();
    let json = format!(
        r#"{{"format":"tiergate.quality_model","version":4,"features":{{}},
        "families":[{}],
        "latent":{{"names":["g0","g1","g2","d0","d1","d2"],"intercepts":[{}],
          "weights":{{"rows":[{}],"values":[{}]}}}},
        "head":{{"gate":[0,1,2],"inputs":[3,4,5],"bias":[{}],"coef":[{}]}},
        "calibration":{{"method":"platt","a":[{}],"b":[{}]}},
        "operating_points":{{"rule":"utility","cost_usd":[{}],
          "cost_model":{{"intercepts":[{}],"per_kchar":[{}]}},"table":[]}}}}"#,
        (0..k)
            .map(|f| format!("\"f{f}\""))
            .collect::<Vec<_>>()
            .join(","),
        list(h, &mut next),
        idx.join(","),
        list(rows * h, &mut next),
        list(k * 3, &mut next),
        list(k * 3 * 3, &mut next),
        list(k, &mut || 1.0),
        list(k, &mut next),
        list(k, &mut || 0.001),
        list(k * 3, &mut || 0.001),
        list(k, &mut || 0.0001),
    );
    QualityModel::from_json(json.as_bytes()).unwrap()
}

/// The 2 KB prompt of `benches/bench_classifier.py` (an ARC-style few-shot prompt) as
/// text and as a chat-completions body.
fn prompt_2k() -> (String, Vec<u8>) {
    let question =
        "George wants to warm his hands quickly by rubbing them. Which skin surface will \
        produce the most heat?\nA) dry palms\nB) wet palms\nC) palms covered with oil\n\
        D) palms covered with lotion\nPrint only a single choice from A or B or C or D \
        without explanation.\nAnswer:\nA\n\n";
    let text = question.repeat(8)[..2048].to_owned();
    let escaped = text.replace('\n', "\\n");
    let body = format!(
        r#"{{"model":"auto","messages":[{{"role":"user","content":"{escaped}"}}],"max_tokens":64}}"#
    );
    (text, body.into_bytes())
}

fn bench(c: &mut Criterion) {
    let model = gated_model();
    let (text, body) = prompt_2k();
    assert_eq!(
        Doc::from_body(&body).unwrap(),
        Doc::from_text(&text),
        "the body holds the text"
    );
    c.bench_function("quality_predict_body_2k", |b| {
        b.iter(|| model.predict_body(black_box(&body)).unwrap());
    });
    c.bench_function("quality_score_body_2k", |b| {
        b.iter(|| model.score_body(black_box(&body)).unwrap());
    });
    c.bench_function("quality_predict_text_2k", |b| {
        b.iter(|| model.predict(&Doc::from_text(black_box(&text))));
    });

    let body = body_4k();
    assert!(hash::request_key(&body, "tenant").is_ok() && body.len() > 3800);
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
