//! Mirror sets and regions after dm-io (placeholder: built in the mirror work).
