//! Per-device dispatch by priority class (placeholder: being written).
