//! Raspberry Pi GPIO through `rppal`: `rppal:17` is BCM GPIO 17 (not the header pin number).
//!
//! Outputs are set to their inactive level before the pin is switched to output mode, so a
//! freshly opened PTT never glitches keyed. Input edges come from rppal's interrupt thread.
//! rppal cannot leave an input's pull resistor untouched: `as-is` and `disabled` both turn the
//! internal pull off, so configure `pull-up`/`pull-down` when the board relies on one.

use std::time::Instant;

use embedded_hal::digital::{ErrorType, InputPin, OutputPin};
use rppal::gpio::{Event, Gpio, Pin, Trigger};

use super::{AnyInput, AnyOutput, EdgeSink, GpioError};
use crate::config::Bias;

fn parse_bcm(address: &str) -> Result<u8, GpioError> {
    address.parse().map_err(|_| {
        GpioError::BadName(format!("rppal:{address}"), "expected a BCM GPIO number, e.g. `rppal:17`".into())
    })
}

fn take_pin(address: &str) -> Result<(String, Pin), GpioError> {
    let bcm = parse_bcm(address)?;
    let name = format!("rppal:{address}");
    let pin = Gpio::new()
        .and_then(|gpio| gpio.get(bcm))
        .map_err(|e| GpioError::io(&name, format!("cannot open BCM GPIO {bcm}: {e}")))?;
    Ok((name, pin))
}

/// Output pins have no pull setting worth applying (the pin drives the line), so `bias` is unused.
pub fn open_output(address: &str, inactive_high: bool, _bias: Bias) -> Result<AnyOutput, GpioError> {
    let (_, pin) = take_pin(address)?;
    let mut pin = if inactive_high { pin.into_output_high() } else { pin.into_output_low() };
    // Keep driving the inactive level after release (see Drop) instead of letting the
    // line float back to an input.
    pin.set_reset_on_drop(false);
    Ok(AnyOutput(Box::new(RppalOutput { pin, inactive_high })))
}

pub fn open_input(address: &str, bias: Bias, sink: EdgeSink) -> Result<AnyInput, GpioError> {
    let (name, pin) = take_pin(address)?;
    let mut pin = match bias {
        Bias::PullUp => pin.into_input_pullup(),
        Bias::PullDown => pin.into_input_pulldown(),
        Bias::AsIs | Bias::Disabled => pin.into_input(),
    };
    pin.set_async_interrupt(Trigger::Both, None, move |event: Event| {
        sink(Instant::now(), event.trigger == Trigger::RisingEdge)
    })
    .map_err(|e| GpioError::io(&name, format!("cannot watch edges: {e}")))?;
    Ok(AnyInput(Box::new(RppalInput { pin })))
}

struct RppalOutput {
    pin: rppal::gpio::OutputPin,
    inactive_high: bool,
}

impl Drop for RppalOutput {
    fn drop(&mut self) {
        if self.inactive_high {
            self.pin.set_high()
        } else {
            self.pin.set_low()
        }
    }
}

impl ErrorType for RppalOutput {
    type Error = GpioError;
}

impl OutputPin for RppalOutput {
    fn set_low(&mut self) -> Result<(), GpioError> {
        self.pin.set_low();
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), GpioError> {
        self.pin.set_high();
        Ok(())
    }
}

struct RppalInput {
    pin: rppal::gpio::InputPin,
}

impl ErrorType for RppalInput {
    type Error = GpioError;
}

impl InputPin for RppalInput {
    fn is_high(&mut self) -> Result<bool, GpioError> {
        Ok(self.pin.is_high())
    }
    fn is_low(&mut self) -> Result<bool, GpioError> {
        Ok(self.pin.is_low())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn addresses_are_bcm_numbers() {
        assert_eq!(parse_bcm("17").unwrap(), 17);
        for bad in ["", "GPIO17", "-1", "300", "gpiochip0:17"] {
            assert!(matches!(parse_bcm(bad), Err(GpioError::BadName(..))), "{bad}");
        }
    }

    /// This machine is not a Raspberry Pi: opening must fail with the line's name, never succeed.
    #[test]
    fn opening_without_pi_hardware_is_a_clear_error() {
        if std::path::Path::new("/dev/gpiomem").exists() {
            return; // real Pi: nothing to prove here
        }
        let err = open_output("17", false, Bias::AsIs).err().expect("no Pi here").to_string();
        assert!(err.contains("rppal:17") && err.contains("BCM GPIO 17"), "{err}");
        let sink: EdgeSink = Arc::new(|_, _| {});
        let err = open_input("4", Bias::PullUp, sink).err().expect("no Pi here").to_string();
        assert!(err.contains("rppal:4"), "{err}");
    }
}
