//! Driver for the channel router core: takes RX open/close from radio ports, hands TX requests
//! back to them, and wakes the core at its deadlines.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::radio_port::PortInput;
use super::watchdog::{Heartbeat, BEAT_PERIOD};
use super::audio_port::PortAudio;
use super::{clock, ChannelMsg, PortId};
use crate::pipeline::MediaPacket;
use crate::config::{Config, PortConfig};
use crate::core::routing::{PortKind, PortSpec, Router, RouterOutput};

/// Until the audio path reports frames, an open COR (carrier present) is what tells the
/// floor that the talker is alive; refresh it well inside the no-media timeout.
const CARRIER_AS_MEDIA: Duration = Duration::from_millis(500);

pub struct ChannelRouter {
    router: Router,
    channel_names: Vec<String>,
    port_names: Vec<String>,
    /// The channel each port talks on when its COR opens (radios: their only channel).
    talk_channel: Vec<Option<usize>>,
    rx_active: Vec<bool>,
    ports: Vec<mpsc::UnboundedSender<PortInput>>,
    audio: Vec<Option<PortAudio>>,
    heartbeat: Heartbeat,
}

impl ChannelRouter {
    pub fn new(
        config: &Config,
        ports: Vec<mpsc::UnboundedSender<PortInput>>,
        port_audio: Vec<(PortId, Option<PortAudio>)>,
        heartbeat: Heartbeat,
    ) -> Self {
        let mut audio: Vec<Option<PortAudio>> = (0..ports.len()).map(|_| None).collect();
        for (id, a) in port_audio {
            audio[id] = a;
        }
        let channel_names: Vec<String> = config.channel.keys().cloned().collect();
        let index = |name: &str| channel_names.iter().position(|c| c == name);
        let specs: Vec<PortSpec> = config
            .port
            .values()
            .map(|p| PortSpec {
                kind: match p {
                    PortConfig::Radio(_) => PortKind::Radio,
                    PortConfig::Desk(_) => PortKind::Desk,
                },
                channels: p.channels().into_iter().filter_map(index).collect(),
                priority: p.priority(),
            })
            .collect();
        let talk_channel = specs.iter().map(|s| s.channels.first().copied()).collect();
        let arbiters = config.channel.values().map(|c| c.arbiter_config()).collect();
        Self {
            router: Router::new(arbiters, specs),
            port_names: config.port.keys().cloned().collect(),
            rx_active: vec![false; ports.len()],
            channel_names,
            talk_channel,
            ports,
            audio,
            heartbeat,
        }
    }

    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<ChannelMsg>, cancel: CancellationToken) {
        let mut carrier = tokio::time::interval(CARRIER_AS_MEDIA);
        let mut beat = tokio::time::interval(BEAT_PERIOD);
        loop {
            let deadline = self.router.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                msg = rx.recv() => match msg {
                    Some(ChannelMsg::RxActive { port, active }) => {
                        let Some(channel) = self.talk_channel.get(port).copied().flatten() else { continue };
                        self.rx_active[port] = active;
                        let now = clock::now();
                        if active {
                            self.router.press(now, port, channel);
                        } else {
                            self.router.unpress(now, port, channel);
                        }
                    }
                    Some(ChannelMsg::Media { port, packet }) => self.forward(port, &packet),
                    None => break,
                },
                _ = carrier.tick() => {
                    let now = clock::now();
                    let without_audio = |p: &usize| !self.audio[*p].as_ref().is_some_and(|a| a.has_capture);
                    for port in (0..self.rx_active.len()).filter(|&p| self.rx_active[p]).filter(without_audio) {
                        if let Some(channel) = self.talk_channel[port] {
                            self.router.media(now, port, channel);
                        }
                    }
                }
                _ = sleep => self.router.handle_timeout(clock::now()),
                _ = beat.tick() => self.heartbeat.beat(),
            }
            self.dispatch();
        }
    }

    /// Forward a talker's packet to the other radios on its channel, if it holds the floor:
    /// media from anyone else is dropped, whatever the sender believes.
    fn forward(&mut self, port: PortId, packet: &MediaPacket) {
        let Some(channel) = self.talk_channel.get(port).copied().flatten() else { return };
        if self.router.holder(channel) != Some(port) {
            return;
        }
        let now = clock::now();
        self.router.media(now, port, channel);
        for member in self.router.members(channel).filter(|&m| m != port) {
            if let Some(tx) = self.audio[member].as_ref().and_then(|a| a.tx.as_ref()) {
                tx.lock().unwrap_or_else(|p| p.into_inner()).push(now, packet);
            }
        }
    }

    fn dispatch(&mut self) {
        while let Some(out) = self.router.poll_output() {
            match out {
                RouterOutput::TxRequest { port, on } => {
                    let _ = self.ports[port].send(PortInput::TxRequest(on));
                }
                RouterOutput::Floor { channel, holder } => match holder {
                    Some(p) => info!(channel = %self.channel_names[channel], talker = %self.port_names[p], "floor taken"),
                    None => info!(channel = %self.channel_names[channel], "floor idle"),
                },
                RouterOutput::Busy { port, channel, .. } => {
                    warn!(port = %self.port_names[port], channel = %self.channel_names[channel], "floor busy, request denied")
                }
                RouterOutput::Revoked { port, channel, cause } => {
                    warn!(port = %self.port_names[port], channel = %self.channel_names[channel], ?cause, "floor revoked")
                }
                RouterOutput::Talk { port, on, .. } => {
                    if let Some(a) = &self.audio[port] {
                        a.flags.set_talking(on);
                    }
                }
            }
        }
    }
}
