//! Per-leg counters (placeholder: built in the mirror work).
