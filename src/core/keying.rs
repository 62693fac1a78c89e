//! Radio keying, one instance per radio port. SKELETON: the API below is the contract.

use std::time::{Duration, Instant};

/// Keying timers and behaviour for one radio port.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyingConfig {
    pub cor_debounce: Duration,
    pub min_keyup: Duration,
    pub squelch_hang: Duration,
    pub flap_window: Duration,
    pub flap_max_changes: u32,
    pub rx_timeout: Duration,
    pub tx_delay: Duration,
    pub tx_hang: Duration,
    pub tot: Duration,
    pub duplex: bool,
    /// When set, COR comes from audio level ([`Input::VoxLevel`]) instead of a line.
    pub vox: Option<VoxConfig>,
}

impl Default for KeyingConfig {
    fn default() -> Self {
        let ms = Duration::from_millis;
        Self {
            cor_debounce: ms(20),
            min_keyup: ms(0),
            squelch_hang: ms(300),
            flap_window: ms(2000),
            flap_max_changes: 10,
            rx_timeout: ms(180_000),
            tx_delay: ms(500),
            tx_hang: ms(2000),
            tot: ms(180_000),
            duplex: false,
            vox: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct VoxConfig {
    pub open_dbfs: f32,
    pub close_dbfs: f32,
}

impl Default for VoxConfig {
    fn default() -> Self {
        Self { open_dbfs: -30.0, close_dbfs: -36.0 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Input {
    Cor(bool),
    VoxLevel(f32),
    TxRequest(bool),
    Inhibit(bool),
    Shutdown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    RxOpen,
    RxClose,
    KerchunkIgnored,
    FlapSuppressed,
    FlapCleared,
    RxTimeout,
    PttOn,
    TxAudioOpen,
    PttOff(PttOffReason),
    TotFired,
    LockoutCleared,
    TxBlocked(TxBlockReason),
    InhibitChanged(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PttOffReason {
    HangExpired,
    TimeOut,
    Inhibited,
    Shutdown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxBlockReason {
    Inhibited,
    LockedOut,
    Busy,
    ShutDown,
}

pub struct Keying {
    _config: KeyingConfig,
}

impl Keying {
    pub fn new(config: KeyingConfig) -> Self {
        Self { _config: config }
    }
    pub fn handle_input(&mut self, _now: Instant, _input: Input) {}
    pub fn handle_timeout(&mut self, _now: Instant) {}
    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    pub fn poll_event(&mut self) -> Option<Event> {
        None
    }
    pub fn ptt(&self) -> bool {
        false
    }
    pub fn tx_audio(&self) -> bool {
        false
    }
    pub fn rx_active(&self) -> bool {
        false
    }
    pub fn locked_out(&self) -> bool {
        false
    }
    pub fn inhibited(&self) -> bool {
        false
    }
    pub fn tot_remaining(&self, _now: Instant) -> Option<Duration> {
        None
    }
}
