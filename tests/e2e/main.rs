//! End-to-end tests: each starts the real `kiln` binary against the real
//! Postgres and Redis (see `helpers`), and drives it over HTTP as a client
//! would, or through the official `@trigger.dev/sdk` (`sdk`).

// Helpers are shared across test modules; `pub` marks what they offer.
#![allow(unreachable_pub)]

mod cli;
mod convert;
mod dashboard;
mod deploy;
mod errors;
mod export;
mod faults;
mod helpers;
mod http_task;
mod isolation;
mod lifecycle;
mod metadata;
mod metrics;
mod openapi;
mod packets;
#[path = "../support/pdfgen.rs"]
mod pdfgen;
mod plans;
mod preview;
mod recording;
mod schedules;
mod sdk;
mod sentinel;
mod storage;
mod supermark;
mod task_host;
#[path = "../support/task_host.rs"]
mod task_host_app;
mod telemetry;
mod waits;
mod worker_api;
