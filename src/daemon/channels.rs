//! Channel router task (placeholder until the floor core lands).
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::radio_port::PortInput;
use super::ChannelMsg;
use crate::config::Config;

pub struct ChannelRouter {
    members: Vec<(String, Vec<usize>)>,
    ports: Vec<mpsc::UnboundedSender<PortInput>>,
}

impl ChannelRouter {
    pub fn new(config: &Config, ports: Vec<mpsc::UnboundedSender<PortInput>>) -> Self {
        let members = config
            .channel
            .keys()
            .map(|ch| {
                let ids = config.port.values().enumerate().filter(|(_, p)| p.channels().contains(&ch.as_str())).map(|(i, _)| i).collect();
                (ch.clone(), ids)
            })
            .collect();
        Self { members, ports }
    }

    pub async fn run(self, mut rx: mpsc::UnboundedReceiver<ChannelMsg>, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                msg = rx.recv() => match msg {
                    Some(ChannelMsg::RxActive { port, active }) => {
                        for (_, ids) in &self.members {
                            if ids.contains(&port) {
                                for &other in ids.iter().filter(|&&o| o != port) {
                                    let _ = self.ports[other].send(PortInput::TxRequest(active));
                                }
                            }
                        }
                    }
                    None => break,
                },
            }
        }
    }
}
