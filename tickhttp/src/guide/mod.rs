//! Guides: how the pieces fit together, longer than the documentation of any one item.
//!
//! Nothing here is code; every example in these pages compiles as part of the test suite.
//!
//! | Guide | Read it when |
//! |---|---|
//! | [`pool`] | running the application in several processes: architectures, balancers, supervision, signals |
//! | [`event_driven`] | writing an application that owns its loop: responses in later ticks, background tasks, shutdown |
//! | [`migrating_from_callbacks`] | turning a per-connection callback worker into an event-driven one |
//! | [`security`] | exposing a server to untrusted clients: limits, timeouts, framing, what is not covered |
//! | [`tuning`] | getting more throughput or lower latency, and reading the benchmarks |
//! | [`defaults`] | wondering why a default is what it is |
//! | [`php_mapping`] | coming from Duyler HTTP Server (PHP): each class and method and its tickhttp counterpart |
//!
//! The examples in `tickhttp/examples/` are runnable companions to these pages; the README
//! lists them with the command that starts each.

pub mod defaults;
pub mod event_driven;
pub mod migrating_from_callbacks;
pub mod php_mapping;
pub mod pool;
pub mod security;
pub mod tuning;
