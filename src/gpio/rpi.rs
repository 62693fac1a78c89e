//! SKELETON backend.
use super::{AnyInput, AnyOutput, EdgeSink, GpioError};
use crate::config::Bias;

pub fn open_output(address: &str, _inactive_high: bool, _bias: Bias) -> Result<AnyOutput, GpioError> {
    Err(GpioError::io(address, "not implemented"))
}

pub fn open_input(address: &str, _bias: Bias, _sink: EdgeSink) -> Result<AnyInput, GpioError> {
    Err(GpioError::io(address, "not implemented"))
}
