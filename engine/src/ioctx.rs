//! I/O contexts after blk-ioc (placeholder: being written).
