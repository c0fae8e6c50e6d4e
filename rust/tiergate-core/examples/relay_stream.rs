//! The overhead benchmark's stream (`UPSTREAM` in `benches/bench_overhead.py`: six
//! chunks and `[DONE]` in one network write) relayed N times, for a callgrind count of
//! the core's share of a streaming request:
//! `valgrind --tool=callgrind target/release/examples/relay_stream 1000`.
use std::hint::black_box;

use tiergate_core::relay::OpenAiRelay;

fn chunk(delta: &str, finish: &str) -> String {
    format!(
        "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":0,\
         \"model\":\"bench-model\",\"choices\":[{{\"index\":0,\"delta\":{delta},\
         \"finish_reason\":{finish}}}]}}\n\n"
    )
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let mut wire = chunk(r#"{"role":"assistant","content":""}"#, "null");
    for w in ["Hel", "lo", "."] {
        wire += &chunk(&format!(r#"{{"content":"{w}"}}"#), "null");
    }
    wire += &chunk("{}", "\"stop\"");
    wire += "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":0,\
             \"model\":\"bench-model\",\"choices\":[],\"usage\":{\"prompt_tokens\":60,\
             \"completion_tokens\":2,\"total_tokens\":62}}\n\ndata: [DONE]\n\n";
    let mut bytes = 0;
    for _ in 0..n {
        let mut r = OpenAiRelay::new("bench-model");
        r.feed(black_box(wire.as_bytes()));
        r.begin(
            "chatcmpl-0123456789abcdef01234567",
            "bench-model",
            1_700_000_000,
            false,
        );
        bytes += r.render().map_or(0, |o| o.len());
        assert!(r.ended());
    }
    println!("{bytes}");
}
