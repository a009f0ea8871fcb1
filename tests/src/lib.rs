//! Test harness for the cross-tool tests.
