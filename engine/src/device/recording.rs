//! A recording device (placeholder: built in the devices work).

/// One logged request.
#[derive(Debug, Clone)]
pub enum RecordedOp {
    Flush,
}

/// A point at which to cut the power.
#[derive(Debug, Clone)]
pub struct CrashPoint;

#[derive(Debug)]
pub struct RecordingDevice;
