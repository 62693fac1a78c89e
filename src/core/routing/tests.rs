use std::time::{Duration, Instant};

use super::*;

fn radio(name: &str, channel: ChannelId) -> PortSpec {
    PortSpec { name: name.into(), kind: PortKind::Radio, channels: vec![channel], priority: Priority::NORMAL }
}

fn hosted(n: usize) -> Vec<ChannelHost> {
    vec![ChannelHost::Local(ArbiterConfig::default()); n]
}

fn drain(r: &mut Router) -> Vec<RouterOutput> {
    std::iter::from_fn(|| r.poll_output()).collect()
}

#[test]
fn cor_on_one_radio_keys_the_others_on_its_channel_only() {
    let t = Instant::now();
    let mut r = Router::new(hosted(2), vec![radio("a", 0), radio("b", 0), radio("c", 1)]);
    r.press(t, 0, 0);
    let out = drain(&mut r);
    assert!(out.contains(&RouterOutput::Talk { port: 0, channel: 0, on: true }));
    assert!(out.contains(&RouterOutput::Floor { channel: 0, holder: Some(Talker::Port(0)) }));
    assert!(out.contains(&RouterOutput::TxRequest { port: 1, on: true }));
    assert!(!out.iter().any(|o| matches!(o, RouterOutput::TxRequest { port: 0 | 2, .. })));
    r.unpress(t, 0, 0);
    let out = drain(&mut r);
    assert!(out.contains(&RouterOutput::TxRequest { port: 1, on: false }));
    assert!(out.contains(&RouterOutput::Floor { channel: 0, holder: None }));
}

#[test]
fn second_talker_is_told_busy_and_keys_nothing_new() {
    let t = Instant::now();
    let mut r = Router::new(hosted(1), vec![radio("a", 0), radio("b", 0)]);
    r.press(t, 0, 0);
    drain(&mut r);
    r.press(t, 1, 0);
    let out = drain(&mut r);
    assert_eq!(out, vec![RouterOutput::Busy { port: 1, channel: 0, holder: Some(Talker::Port(0)) }]);
    assert_eq!(r.holder(0), Some(Talker::Port(0)));
}

#[test]
fn desk_with_dispatch_priority_preempts_a_radio_and_keys_it() {
    let t = Instant::now();
    let desk = PortSpec { name: "desk".into(), kind: PortKind::Desk, channels: vec![0], priority: Priority::DISPATCH };
    let mut r = Router::new(hosted(1), vec![radio("a", 0), desk]);
    r.press(t, 0, 0);
    drain(&mut r);
    r.press(t, 1, 0);
    let out = drain(&mut r);
    assert!(out.contains(&RouterOutput::Talk { port: 0, channel: 0, on: false }));
    assert!(out.iter().any(|o| matches!(o, RouterOutput::Revoked { port: 0, channel: 0, .. })));
    assert!(out.contains(&RouterOutput::Talk { port: 1, channel: 0, on: true }));
    assert!(out.contains(&RouterOutput::TxRequest { port: 0, on: true }), "the radio now carries the desk");
}

#[test]
fn max_talk_time_frees_the_floor_and_unkeys() {
    let t = Instant::now();
    let cfg = ArbiterConfig { max_talk: Duration::from_secs(30), no_media_timeout: Duration::from_secs(3600), ..Default::default() };
    let mut r = Router::new(vec![ChannelHost::Local(cfg)], vec![radio("a", 0), radio("b", 0)]);
    r.press(t, 0, 0);
    drain(&mut r);
    assert!(r.poll_timeout().unwrap() <= t + Duration::from_secs(30));
    r.handle_timeout(t + Duration::from_secs(30));
    let out = drain(&mut r);
    assert!(out.contains(&RouterOutput::TxRequest { port: 1, on: false }), "{out:?}");
    assert_eq!(r.holder(0), None);
}

#[test]
fn media_goes_from_the_holder_to_everyone_else_and_from_nobody_else() {
    let t = Instant::now();
    let mut r = Router::new(hosted(1), vec![radio("a", 0), radio("b", 0)]);
    let console = r.add_remote(t, 9, "console@web", 0, Priority::NORMAL).unwrap();
    assert_eq!(r.media(t, MediaSource::Port(0), 0), None, "idle channel forwards nothing");
    r.press(t, 0, 0);
    drain(&mut r);
    assert_eq!(r.media(t, MediaSource::Port(0), 0), Some(vec![MediaTarget::Port(1), MediaTarget::Peer(9)]));
    assert_eq!(r.media(t, MediaSource::Port(1), 0), None, "not the holder");
    assert_eq!(r.media(t, MediaSource::Peer(9), 0), None, "not the holder");
    let _ = console;
}

#[test]
fn remote_member_talks_through_the_hub_and_keys_local_radios() {
    let t = Instant::now();
    let mut r = Router::new(hosted(1), vec![radio("a", 0)]);
    let id = r.add_remote(t, 5, "radio1@edge", 0, Priority::NORMAL).unwrap();
    assert!(drain(&mut r).contains(&RouterOutput::Roster { channel: 0 }));
    assert_eq!(r.roster(0).len(), 2);
    r.from_peer(t, 5, id, ToArbiter::Request { priority: Priority::EMERGENCY });
    let out = drain(&mut r);
    assert!(out.contains(&RouterOutput::ToPeer { peer: 5, channel: 0, member: Some(id), msg: ToParticipant::Granted }));
    // The peer asked for emergency priority but joined as normal: it gets normal.
    assert!(out.contains(&RouterOutput::ToPeer {
        peer: 5,
        channel: 0,
        member: None,
        msg: ToParticipant::Taken { holder: id, priority: Priority::NORMAL }
    }));
    assert!(out.contains(&RouterOutput::TxRequest { port: 0, on: true }));
    assert_eq!(r.media(t, MediaSource::Peer(5), 0), Some(vec![MediaTarget::Port(0)]));
    assert_eq!(r.talker_name(Talker::Remote(id)).as_deref(), Some("radio1@edge"));

    // A local COR now is busy.
    r.press(t, 0, 0);
    assert!(drain(&mut r).contains(&RouterOutput::Busy { port: 0, channel: 0, holder: Some(Talker::Remote(id)) }));
    r.unpress(t, 0, 0);
    drain(&mut r);

    // The peer disconnects mid-talk: the floor is freed and the radio unkeys.
    r.remove_peer(t, 5);
    let out = drain(&mut r);
    assert!(out.contains(&RouterOutput::TxRequest { port: 0, on: false }), "{out:?}");
    assert_eq!(r.holder(0), None);
    assert_eq!(r.roster(0).len(), 1);
}

#[test]
fn a_peer_cannot_act_for_another_peers_member() {
    let t = Instant::now();
    let mut r = Router::new(hosted(1), vec![radio("a", 0)]);
    let id = r.add_remote(t, 5, "x", 0, Priority::NORMAL).unwrap();
    r.from_peer(t, 6, id, ToArbiter::Request { priority: Priority::NORMAL });
    assert_eq!(r.holder(0), None);
    r.from_peer(t, 5, ParticipantId(999), ToArbiter::Request { priority: Priority::NORMAL });
    assert_eq!(r.holder(0), None);
}

#[test]
fn edge_requests_go_to_the_uplink_and_its_answers_drive_the_radios() {
    let t = Instant::now();
    let mut r = Router::new(vec![ChannelHost::Uplink], vec![radio("a", 0), radio("b", 0)]);
    // Before the uplink is up, a COR asks nothing of anyone and keys nothing.
    r.press(t, 0, 0);
    assert!(drain(&mut r).is_empty());
    let (ida, idb) = (ParticipantId(40), ParticipantId(41));
    r.uplink_up(t, &[(0, 0, ida), (1, 0, idb)]);
    let out = drain(&mut r);
    assert_eq!(out, vec![RouterOutput::ToUplink { member: ida, msg: ToArbiter::Request { priority: Priority::NORMAL } }]);
    r.from_uplink(t, 0, Some(ida), ToParticipant::Granted);
    r.from_uplink(t, 0, None, ToParticipant::Taken { holder: ida, priority: Priority::NORMAL });
    let out = drain(&mut r);
    assert!(out.contains(&RouterOutput::Talk { port: 0, channel: 0, on: true }));
    assert!(out.contains(&RouterOutput::TxRequest { port: 1, on: true }), "the other local radio hears it");
    assert_eq!(r.media(t, MediaSource::Port(0), 0), Some(vec![MediaTarget::Port(1), MediaTarget::Uplink]));

    // Someone far away takes over (preemption by the hub).
    r.from_uplink(t, 0, Some(ida), ToParticipant::Revoke { cause: RevokeCause::Preempted { by: ParticipantId(7) } });
    r.from_uplink(t, 0, None, ToParticipant::Taken { holder: ParticipantId(7), priority: Priority::DISPATCH });
    let out = drain(&mut r);
    assert!(out.contains(&RouterOutput::Talk { port: 0, channel: 0, on: false }));
    assert!(out.contains(&RouterOutput::TxRequest { port: 0, on: true }));
    assert_eq!(r.media(t, MediaSource::Uplink, 0), Some(vec![MediaTarget::Port(0), MediaTarget::Port(1)]));
    assert_eq!(r.media(t, MediaSource::Port(0), 0), None);

    // Uplink lost: every radio unkeys at once.
    r.uplink_down(t);
    let out = drain(&mut r);
    assert!(out.contains(&RouterOutput::TxRequest { port: 0, on: false }));
    assert!(out.contains(&RouterOutput::TxRequest { port: 1, on: false }));
    assert_eq!(r.holder(0), None);
    assert_eq!(r.media(t, MediaSource::Uplink, 0), None);
}

#[test]
fn edge_cor_still_open_after_reconnect_asks_again() {
    let t = Instant::now();
    let mut r = Router::new(vec![ChannelHost::Uplink], vec![radio("a", 0)]);
    r.uplink_up(t, &[(0, 0, ParticipantId(1))]);
    r.press(t, 0, 0);
    drain(&mut r);
    r.uplink_down(t);
    drain(&mut r);
    r.uplink_up(t, &[(0, 0, ParticipantId(9))]);
    let out = drain(&mut r);
    assert!(out.contains(&RouterOutput::ToUplink { member: ParticipantId(9), msg: ToArbiter::Request { priority: Priority::NORMAL } }), "{out:?}");
}

#[test]
fn moving_a_talking_radio_to_another_channel_frees_the_old_floor_and_asks_on_the_new() {
    let t = Instant::now();
    let mut r = Router::new(hosted(2), vec![radio("a", 0), radio("b", 0), radio("c", 1)]);
    r.press(t, 0, 0);
    drain(&mut r);
    assert!(r.set_port_channel(t, 0, 1));
    let out = drain(&mut r);
    assert!(out.contains(&RouterOutput::TxRequest { port: 1, on: false }), "B no longer carries A: {out:?}");
    assert!(out.contains(&RouterOutput::Floor { channel: 1, holder: Some(Talker::Port(0)) }));
    assert!(out.contains(&RouterOutput::TxRequest { port: 2, on: true }), "C now carries A");
    assert_eq!(r.holder(0), None);
    assert!(r.members(1).any(|p| p == 0) && !r.members(0).any(|p| p == 0));
    assert!(!r.set_port_channel(t, 0, 7), "unknown channel refused");
    let mut edge = Router::new(vec![ChannelHost::Uplink, ChannelHost::Uplink], vec![radio("a", 0)]);
    assert!(!edge.set_port_channel(t, 0, 1), "an edge's channels are the hub's business");
}
