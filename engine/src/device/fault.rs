//! A fault-injecting device (placeholder: built in the devices work).
use super::DeviceRef;

/// Which kind of request a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Read,
    Write,
    Flush,
}

/// What happens to a matching request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    Fail,
}

/// One rule: which requests, what fault.
#[derive(Debug, Clone)]
pub struct FaultRule {
    pub op: Op,
    pub fault: Fault,
}

#[derive(Debug)]
pub struct FaultDevice {
    _inner: DeviceRef,
}
