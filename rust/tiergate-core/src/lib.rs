//! tiergate's routing core: pure functions and data structures, no I/O, no Python.
//!
//! * [`anthropic_message`]: the Anthropic surface's answer of text written;
//! * [`anthropic_request`]: the usual Anthropic Messages body with its key, token
//!   estimate and capabilities;
//! * [`anthropic_turn`]: an agent's turn on the Anthropic surface (`tool_use`,
//!   `tool_result`, tools) read in one pass;
//! * [`chatbody`]: the `OpenAI` chat body a provider is sent for plain-text messages
//!   and for an agent's turn;
//! * [`completion`]: an `OpenAI` chat completion read and written;
//! * [`hash`]: canonical form and xxh3-128 idempotency key of a chat request;
//! * [`ingest`]: the usual chat request (or an agent's turn) with its key, token
//!   estimate and capabilities;
//! * [`window`]: sliding-window latency quantiles;
//! * [`logline`]: the request log line written from the request's record;
//! * [`tokens`]: prompt-token estimate of a chat request;
//! * [`policy`]: the router that ranks candidates for one request;
//! * [`routes`]: the planner's request record, route scopes and output means around it;
//! * [`rawjson`]: the request-body parser that keeps strings as input slices;
//! * [`relay`]: an `OpenAI` chat stream relayed to the `OpenAI` surface in one pass;
//! * [`sse`]: Server-Sent Events framing;
//! * [`request`]: the usual chat request read in one pass;
//! * [`safety`]: PII, secret and prompt-injection spans in one text;
//! * [`sampling`]: a chat body's sampling options read as the Python parser reads them;
//! * [`tally`]: the request metrics, tallied per series until scraped;
//! * [`turn`]: an agent's turn (tools, tool calls, tool results) read in one pass;
//! * [`signals`]: difficulty signals of a prompt for the heuristic quality prior.
#![forbid(unsafe_code)]
// Every fallible function returns a `CoreError` naming the input it rejected (see
// `error.rs`); an `# Errors` section on each would repeat that.
#![allow(clippy::missing_errors_doc)]

pub mod anthropic_message;
pub mod anthropic_request;
mod anthropic_stream;
pub mod anthropic_turn;
mod bytemask;
pub mod chatbody;
mod chunk;
pub mod completion;
pub mod error;
pub mod features;
pub mod hash;
pub mod ingest;
pub mod json;
pub mod logline;
pub mod memo;
#[cfg(test)]
mod mutate;
pub mod policy;
pub mod quality;
pub mod rawjson;
pub mod relay;
pub mod request;
pub mod routes;
pub mod safety;
pub mod sampling;
pub mod signals;
pub mod sse;
pub mod tally;
pub mod tokens;
pub mod turn;
pub mod window;

pub use error::{CoreError, ErrorKind, Result};

/// Version of the core, reported by the Python package.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
