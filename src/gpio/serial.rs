//! SKELETON backend.
use super::{AnyInput, AnyOutput, EdgeSink, GpioError};

#[derive(Default)]
pub struct SerialPorts {}

impl SerialPorts {
    pub fn output(&mut self, address: &str, _inactive_high: bool) -> Result<AnyOutput, GpioError> {
        Err(GpioError::io(address, "not implemented"))
    }
    pub fn input(&mut self, address: &str, _sink: EdgeSink) -> Result<AnyInput, GpioError> {
        Err(GpioError::io(address, "not implemented"))
    }
}
