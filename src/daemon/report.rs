//! Where the daemon tells what happens: port states and events, for the fleet (MQTT) and
//! anyone else listening. Reporting never blocks and never fails the caller: with no broker
//! configured it only logs, and the fleet client queues (bounded) while the broker is away.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::fleet::{Event, EventKind, FleetHandle, PortState, UplinkState};

#[derive(Clone)]
pub struct Reporter {
    fleet: Option<FleetHandle>,
    /// The latest state of every port, for consoles that join later.
    ports: Arc<Mutex<Vec<(String, PortState)>>>,
    /// Bumped on every port state change, so consoles can be told.
    changed: Arc<watch::Sender<u64>>,
    /// Audio xruns on every device since start, for the periodic metrics.
    xruns: Arc<AtomicU64>,
}

impl Reporter {
    pub fn new(fleet: Option<FleetHandle>) -> Self {
        Self { fleet, ports: Default::default(), changed: Arc::new(watch::channel(0).0), xruns: Default::default() }
    }

    /// Wakes when any port's state changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The fleet client, for parts that report on their own (the floor over MQTT).
    pub fn fleet(&self) -> Option<FleetHandle> {
        self.fleet.clone()
    }

    pub fn event(&self, event: Event) {
        if let Some(f) = &self.fleet {
            f.publish_event(event);
        }
    }

    /// A port's state; unchanged states cost nothing downstream.
    pub fn port_state(&self, port: &str, state: PortState) {
        {
            let mut ports = self.ports.lock().unwrap_or_else(|p| p.into_inner());
            match ports.iter_mut().find(|(name, _)| name == port) {
                Some((_, s)) if *s == state => return,
                Some((_, s)) => *s = state.clone(),
                None => ports.push((port.to_string(), state.clone())),
            }
        }
        self.changed.send_modify(|v| *v += 1);
        if let Some(f) = &self.fleet {
            f.set_port_state(port, state);
        }
    }

    pub fn port_states(&self) -> Vec<(String, PortState)> {
        self.ports.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Something happened to a port's audio device (xrun, lost, found); xruns are also counted.
    pub fn device_event(&self, port: &str, kind: EventKind, detail: impl Into<String>) {
        if kind == EventKind::Xrun {
            self.xruns.fetch_add(1, Ordering::Relaxed);
        }
        let mut event = Event::new(kind).detail(detail);
        event.port = Some(port.to_string());
        self.event(event);
    }

    /// Audio xruns counted by [`Reporter::device_event`] since start.
    pub fn xruns(&self) -> u64 {
        self.xruns.load(Ordering::Relaxed)
    }

    /// The uplink is not up yet, and why (no event: the status says it).
    pub fn link_waiting(&self, detail: String) {
        if let Some(f) = &self.fleet {
            f.set_uplink_state(UplinkState::Connecting, Some(detail));
        }
    }

    /// The uplink's far end is refused (a Janus room without the protection the config asks
    /// for): a `room_refused` event and the uplink state `refused`.
    pub fn link_refused(&self, channel: &str, fault: crate::net::janus::RoomFault, reason: &str) {
        self.event(crate::net::janus::refused_event(channel, fault, reason));
        if let Some(f) = &self.fleet {
            f.set_uplink_state(UplinkState::Refused, Some(reason.to_owned()));
        }
    }

    /// The uplink hub's certificate failed verification: a `hub_untrusted` event and the uplink
    /// state `refused`, both with the reason (the fingerprint the hub presented).
    pub fn link_untrusted(&self, reason: &str) {
        self.event(Event::new(EventKind::HubUntrusted).detail(reason));
        if let Some(f) = &self.fleet {
            f.set_uplink_state(UplinkState::Refused, Some(reason.to_owned()));
        }
    }

    pub fn link(&self, up: bool, detail: Option<String>) {
        let kind = if up { EventKind::LinkUp } else { EventKind::LinkDown };
        let mut event = Event::new(kind);
        event.detail = detail.clone();
        self.event(event);
        if let Some(f) = &self.fleet {
            f.set_uplink_state(if up { UplinkState::Up } else { UplinkState::Down }, detail);
        }
    }
}
