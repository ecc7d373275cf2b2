#![allow(unreachable_pub)] // helpers of a test binary are `pub` for its modules, not for export.
//! Integration tests: the real server on a random port, real storage, spoken to over HTTP.
//! One test binary keeps link time down.

mod analytics;
mod browser;
mod cli;
mod cluster;
mod connections;
mod conventions;
mod credentials;
mod dashboard;
mod gateways;
mod hostile_input;
mod import;
mod keys;
mod leaks;
mod portal;
mod process;
mod redis;
mod scopes;
mod sdk;
mod security;
mod stream;
mod testkit;
mod usage;
mod webhooks;
