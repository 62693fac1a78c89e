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
    assert_eq!(out[0], RouterOutput::Busy { port: 1, channel: 0, holder: Some(Talker::Port(0)) });
    // b receives too, so it cannot carry a (simplex): its air state says so, nothing more.
    assert_eq!(
        out[1..],
        [RouterOutput::Air { channel: 0, radios: vec![(1, AirState::Waiting(WaitReason::Receiving))] }]
    );
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
    let cfg = ArbiterConfig {
        max_talk: Duration::from_secs(30),
        no_media_timeout: Duration::from_secs(3600),
        ..Default::default()
    };
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

/// Consoles that come and go leave nothing behind in the router (issue 14 item 5): it held a
/// slot for every member it ever had, and walked them all on every floor message and packet.
#[test]
fn members_that_leave_are_forgotten_and_their_ids_never_come_back() {
    let t = Instant::now();
    let mut r = Router::new(hosted(1), vec![radio("a", 0)]);
    let mut last = None;
    for round in 0..50u64 {
        let ids: Vec<ParticipantId> =
            (0..20).map(|i| r.add_remote(t, round * 100 + i, "console", 0, Priority::NORMAL).unwrap()).collect();
        assert!(ids.iter().all(|id| last.is_none_or(|l| *id > l)), "an id came back");
        last = ids.last().copied();
        r.from_peer(t, round * 100, ids[0], ToArbiter::Request { priority: Priority::NORMAL });
        assert_eq!(r.holder(0), Some(Talker::Remote(ids[0])));
        for i in 0..20 {
            r.remove_peer(t, round * 100 + i);
        }
        drain(&mut r);
        assert_eq!(r.members.len(), 1, "round {round}: only the radio is left");
        assert_eq!(r.holder(0), None);
        // A late message for a member that left changes nothing.
        r.from_peer(t, round * 100, ids[0], ToArbiter::Request { priority: Priority::NORMAL });
        assert_eq!(r.holder(0), None);
    }
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
    assert_eq!(
        out,
        vec![RouterOutput::ToUplink { member: ida, msg: ToArbiter::Request { priority: Priority::NORMAL } }]
    );
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
    assert!(
        out.contains(&RouterOutput::ToUplink {
            member: ParticipantId(9),
            msg: ToArbiter::Request { priority: Priority::NORMAL }
        }),
        "{out:?}"
    );
}

/// A radio keyed up while its uplink is down says nothing every 2 s (no request went out, so
/// none is unanswered); once the uplink is up, an unanswered request is reported and repeated.
#[test]
fn an_edge_radio_pressed_while_the_uplink_is_down_reports_no_unanswered_request() {
    let t = Instant::now();
    let s = Duration::from_secs;
    let mut r = Router::new(vec![ChannelHost::Uplink], vec![radio("a", 0)]);
    r.press(t, 0, 0);
    for n in 1..=5 {
        r.handle_timeout(t + s(2 * n));
        assert_eq!(drain(&mut r), vec![], "uplink down, {} s after the key-up", 2 * n);
    }
    let id = ParticipantId(3);
    r.uplink_up(t + s(11), &[(0, 0, id)]);
    let request = RouterOutput::ToUplink { member: id, msg: ToArbiter::Request { priority: Priority::NORMAL } };
    assert_eq!(drain(&mut r), vec![request.clone()]);
    r.handle_timeout(t + s(13));
    assert_eq!(
        drain(&mut r),
        vec![request, RouterOutput::Unanswered { port: 0, channel: 0, asking_again: true }],
        "up, no answer in 2 s: reported and asked again"
    );
    // Down again mid-request: quiet again.
    r.uplink_down(t + s(14));
    drain(&mut r);
    r.handle_timeout(t + s(16));
    assert_eq!(drain(&mut r), vec![]);
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

fn desk(name: &str, channels: Vec<ChannelId>) -> PortSpec {
    PortSpec { name: name.into(), kind: PortKind::Desk, channels, priority: Priority::DISPATCH }
}

fn emergency_radio(name: &str, channel: ChannelId) -> PortSpec {
    PortSpec { priority: Priority::EMERGENCY, ..radio(name, channel) }
}

#[test]
fn all_call_takes_every_free_or_lower_floor_and_is_denied_where_a_higher_talker_holds_it() {
    let t = Instant::now();
    // Radios a (ch 0), b (ch 1), e (ch 2, emergency); the desk monitors all three.
    let mut r = Router::new(
        hosted(3),
        vec![radio("a", 0), radio("b", 1), emergency_radio("e", 2), desk("desk", vec![0, 1, 2])],
    );
    r.press(t, 1, 1); // a field talker on ch 1
    r.press(t, 2, 2); // an emergency on ch 2
    drain(&mut r);
    r.all_call(t, 3, &[0, 1, 2], true);
    let out = drain(&mut r);
    assert!(out.contains(&RouterOutput::Talk { port: 3, channel: 0, on: true }), "free channel: {out:?}");
    assert!(out.contains(&RouterOutput::Talk { port: 3, channel: 1, on: true }), "field talker preempted");
    assert!(out.iter().any(|o| matches!(o, RouterOutput::Revoked { port: 1, channel: 1, .. })));
    assert!(out.contains(&RouterOutput::Busy { port: 3, channel: 2, holder: Some(Talker::Port(2)) }), "emergency kept");
    assert_eq!(r.talking_on(3).collect::<Vec<_>>(), vec![0, 1]);
    assert!(out.contains(&RouterOutput::TxRequest { port: 0, on: true }), "radio a carries the desk");
    assert_eq!(r.holder(2), Some(Talker::Port(2)));
    // The desk's media goes to each channel it holds, to that channel's radio only.
    assert_eq!(r.media(t, MediaSource::Port(3), 0), Some(vec![MediaTarget::Port(0)]));
    assert_eq!(r.media(t, MediaSource::Port(3), 1), Some(vec![MediaTarget::Port(1)]));
    assert_eq!(r.media(t, MediaSource::Port(3), 2), None);

    r.all_call(t, 3, &[0, 1, 2], false);
    let out = drain(&mut r);
    assert!(out.contains(&RouterOutput::TxRequest { port: 0, on: false }), "{out:?}");
    assert!(out.contains(&RouterOutput::TxRequest { port: 1, on: false }));
    assert_eq!(r.talking_on(3).count(), 0);
    assert_eq!(r.holder(2), Some(Talker::Port(2)), "the emergency talker was never touched");
}

#[test]
fn patch_carries_a_talker_onto_the_other_channel_and_releases_with_it() {
    let t = Instant::now();
    let mut r = Router::new(hosted(2), vec![radio("a", 0), radio("b", 1), radio("c", 1)]);
    let p = r.patch(t, 0, 1).unwrap();
    assert!(drain(&mut r).is_empty(), "an idle patch does nothing");
    r.press(t, 0, 0);
    let out = drain(&mut r);
    assert!(out.contains(&RouterOutput::PatchCarry { patch: p, channel: 1, on: true }), "{out:?}");
    assert!(out.contains(&RouterOutput::Floor { channel: 1, holder: Some(Talker::Patch(p)) }));
    assert!(out.contains(&RouterOutput::TxRequest { port: 1, on: true }));
    assert!(out.contains(&RouterOutput::TxRequest { port: 2, on: true }));
    assert!(!out.iter().any(|o| matches!(o, RouterOutput::PatchCarry { channel: 0, .. })), "no feedback onto 0");
    assert_eq!(r.media(t, MediaSource::Port(0), 0), Some(vec![]), "nobody else on channel 0");
    assert_eq!(r.patched(t, 0, MediaSource::Port(0)), vec![(1, vec![MediaTarget::Port(1), MediaTarget::Port(2)])]);
    // A radio on the patched side cannot talk over it, and the patch is not a media source.
    r.press(t, 1, 1);
    assert!(drain(&mut r).contains(&RouterOutput::Busy { port: 1, channel: 1, holder: Some(Talker::Patch(p)) }));
    r.unpress(t, 1, 1);
    assert_eq!(r.media(t, MediaSource::Port(1), 1), None);

    r.unpress(t, 0, 0);
    let out = drain(&mut r);
    assert!(out.contains(&RouterOutput::PatchCarry { patch: p, channel: 1, on: false }), "{out:?}");
    assert!(out.contains(&RouterOutput::TxRequest { port: 1, on: false }));
    assert_eq!(r.holder(1), None);

    // The other direction works the same; then the patch is removed mid-talk.
    r.press(t, 2, 1);
    let out = drain(&mut r);
    assert!(out.contains(&RouterOutput::PatchCarry { patch: p, channel: 0, on: true }));
    assert!(out.contains(&RouterOutput::TxRequest { port: 0, on: true }));
    assert!(r.unpatch(t, p));
    let out = drain(&mut r);
    assert!(out.contains(&RouterOutput::TxRequest { port: 0, on: false }), "{out:?}");
    assert_eq!(r.holder(1), Some(Talker::Port(2)), "the talker keeps its own channel");
    assert_eq!(r.patched(t, 1, MediaSource::Port(2)), vec![]);
    assert!(!r.unpatch(t, p));
}

#[test]
fn patch_is_denied_by_a_busy_channel_and_preempted_by_dispatch() {
    let t = Instant::now();
    let mut r = Router::new(hosted(2), vec![radio("a", 0), radio("b", 1), desk("desk", vec![1])]);
    // Busy: b already talks on 1 when a starts on 0; the patch asks for 1 with a's (normal)
    // priority and is denied. It does not retry while a keeps talking, even once 1 is free.
    r.press(t, 1, 1);
    let p = r.patch(t, 0, 1).unwrap();
    assert_eq!(r.holder(0), Some(Talker::Patch(p)), "b is carried onto 0 at once");
    r.unpress(t, 1, 1);
    r.press(t, 1, 1);
    r.press(t, 0, 0);
    let out = drain(&mut r);
    assert!(out.contains(&RouterOutput::Busy { port: 0, channel: 0, holder: Some(Talker::Patch(p)) }), "{out:?}");
    r.unpress(t, 0, 0);
    r.unpress(t, 1, 1);
    drain(&mut r);
    r.press(t, 1, 1);
    r.unpress(t, 1, 1);
    drain(&mut r);

    // a talks on 0, the patch carries it onto 1; the desk's dispatch PTT on 1 takes 1 back.
    r.press(t, 0, 0);
    drain(&mut r);
    assert_eq!(r.holder(1), Some(Talker::Patch(p)));
    assert_eq!(r.patched(t, 0, MediaSource::Port(0)).len(), 1);
    r.press(t, 2, 1);
    let out = drain(&mut r);
    assert!(out.contains(&RouterOutput::PatchCarry { patch: p, channel: 1, on: false }), "{out:?}");
    assert!(out.contains(&RouterOutput::Talk { port: 2, channel: 1, on: true }));
    // The dispatcher now talks on a patched channel: the patch carries the desk onto 0 with
    // dispatch priority, and a (normal) is preempted there under the same floor rules.
    assert!(out.iter().any(|o| matches!(o, RouterOutput::Revoked { port: 0, channel: 0, .. })));
    assert_eq!(r.holder(0), Some(Talker::Patch(p)));
    assert_eq!(r.media(t, MediaSource::Port(0), 0), None, "a is heard nowhere now");
    assert_eq!(r.patched(t, 1, MediaSource::Port(2)), vec![(0, vec![MediaTarget::Port(0)])]);
    // The desk releases while a still receives: a's call goes on, on both sides of the patch.
    r.unpress(t, 2, 1);
    let out = drain(&mut r);
    assert!(out.contains(&RouterOutput::TxRequest { port: 0, on: false }), "{out:?}");
    assert_eq!((r.holder(0), r.holder(1)), (Some(Talker::Port(0)), Some(Talker::Patch(p))));
    r.unpress(t, 0, 0);
    assert_eq!((r.holder(0), r.holder(1)), (None, None));
}

#[test]
fn patches_refuse_bad_pairs_and_chains_do_not_loop() {
    let t = Instant::now();
    let mut r = Router::new(hosted(3), vec![radio("a", 0), radio("b", 1), radio("c", 2)]);
    assert_eq!(r.patch(t, 0, 0), Err(PatchError::SameChannel));
    assert_eq!(r.patch(t, 0, 7), Err(PatchError::NotHosted(7)));
    let ab = r.patch(t, 0, 1).unwrap();
    assert_eq!(r.patch(t, 1, 0), Err(PatchError::Exists));
    let bc = r.patch(t, 1, 2).unwrap();
    let ca = r.patch(t, 2, 0).unwrap();
    assert_eq!(r.patch_between(2, 1), Some(bc));
    r.press(t, 0, 0);
    drain(&mut r);
    assert_eq!(r.holder(1), Some(Talker::Patch(ab)));
    assert!(matches!(r.holder(2), Some(Talker::Patch(x)) if x == bc || x == ca));
    let routes = r.patched(t, 0, MediaSource::Port(0));
    let reached: Vec<_> = routes.iter().map(|(c, _)| *c).collect();
    assert_eq!(reached.len(), 2, "each other channel once: {routes:?}");
    assert!(reached.contains(&1) && reached.contains(&2));
    r.unpress(t, 0, 0);
    drain(&mut r);
    assert_eq!((r.holder(0), r.holder(1), r.holder(2)), (None, None, None));
    let mut edge = Router::new(vec![ChannelHost::Uplink, ChannelHost::Local(ArbiterConfig::default())], vec![]);
    assert_eq!(edge.patch(t, 0, 1), Err(PatchError::NotHosted(0)));
}

#[test]
fn patch_holds_the_far_floor_only_while_media_flows() {
    let t = Instant::now();
    let cfg = ArbiterConfig { no_media_timeout: Duration::from_secs(5), ..Default::default() };
    let mut r =
        Router::new(vec![ChannelHost::Local(cfg.clone()), ChannelHost::Local(cfg)], vec![radio("a", 0), radio("b", 1)]);
    let p = r.patch(t, 0, 1).unwrap();
    r.press(t, 0, 0);
    drain(&mut r);
    // a's media keeps both floors alive.
    for s in 1..=8 {
        let now = t + Duration::from_secs(s);
        r.handle_timeout(now);
        assert!(r.media(now, MediaSource::Port(0), 0).is_some());
        assert_eq!(r.patched(now, 0, MediaSource::Port(0)).len(), 1);
    }
    assert_eq!(r.holder(1), Some(Talker::Patch(p)));
    // a goes silent (stuck COR without audio): the floor times out. Its COR still open, a asks
    // once more at once (a media path that blinked: radio b stays keyed), and is cut for good
    // when its audio still does not come: both floors free, radio b unkeys and stays unkeyed.
    r.handle_timeout(t + Duration::from_secs(20));
    let out = drain(&mut r);
    assert!(out.contains(&RouterOutput::Revoked { port: 0, channel: 0, cause: RevokeCause::NoMedia }), "{out:?}");
    assert_eq!(r.holder(0), Some(Talker::Port(0)), "asked again once: {out:?}");
    r.handle_timeout(t + Duration::from_secs(40));
    let out = drain(&mut r);
    assert!(out.contains(&RouterOutput::TxRequest { port: 1, on: false }), "{out:?}");
    assert_eq!((r.holder(0), r.holder(1)), (None, None));
    r.handle_timeout(t + Duration::from_secs(120));
    assert!(!drain(&mut r).iter().any(|o| matches!(o, RouterOutput::TxRequest { on: true, .. })), "keyed again");
    assert_eq!((r.holder(0), r.holder(1)), (None, None), "no further retake");
}

#[test]
fn console_releasing_while_a_preempted_radio_still_receives_gives_it_the_floor_back() {
    let t = Instant::now();
    let mut r = Router::new(hosted(1), vec![radio("radio1", 0), radio("radio2", 0)]);
    let console = r.add_remote(t, 9, "console@web", 0, Priority::DISPATCH).unwrap();
    r.press(t, 0, 0); // radio1's squelch opens
    r.from_peer(t, 9, console, ToArbiter::Request { priority: Priority::DISPATCH });
    assert_eq!(r.holder(0), Some(Talker::Remote(console)));
    drain(&mut r);
    r.from_peer(t, 9, console, ToArbiter::Release);
    let out = drain(&mut r);
    assert_eq!(r.holder(0), Some(Talker::Port(0)), "the field unit's call goes on: {out:?}");
    assert!(out.contains(&RouterOutput::Talk { port: 0, channel: 0, on: true }));
    assert!(out.contains(&RouterOutput::TxRequest { port: 0, on: false }));
    assert_eq!(r.media(t, MediaSource::Port(0), 0), Some(vec![MediaTarget::Port(1), MediaTarget::Peer(9)]));
    r.unpress(t, 0, 0);
    assert_eq!(r.holder(0), None);
}

#[test]
fn edge_radio_still_receiving_asks_the_hub_again_when_its_channel_goes_idle() {
    let t = Instant::now();
    let mut r = Router::new(vec![ChannelHost::Uplink], vec![radio("a", 0)]);
    let ida = ParticipantId(40);
    r.uplink_up(t, &[(0, 0, ida)]);
    r.press(t, 0, 0);
    r.from_uplink(t, 0, Some(ida), ToParticipant::Granted);
    r.from_uplink(t, 0, Some(ida), ToParticipant::Revoke { cause: RevokeCause::Preempted { by: ParticipantId(7) } });
    r.from_uplink(t, 0, None, ToParticipant::Taken { holder: ParticipantId(7), priority: Priority::DISPATCH });
    drain(&mut r);
    r.from_uplink(t, 0, None, ToParticipant::Idle);
    let out = drain(&mut r);
    assert!(
        out.contains(&RouterOutput::ToUplink { member: ida, msg: ToArbiter::Request { priority: Priority::NORMAL } }),
        "{out:?}"
    );
    // After a reconnect too (new participants keep the rule).
    r.uplink_down(t);
    r.uplink_up(t, &[(0, 0, ParticipantId(50))]);
    r.from_uplink(
        t,
        0,
        Some(ParticipantId(50)),
        ToParticipant::Deny { cause: DenyCause::Busy { holder: ParticipantId(7) } },
    );
    r.from_uplink(t, 0, None, ToParticipant::Taken { holder: ParticipantId(7), priority: Priority::DISPATCH });
    drain(&mut r);
    r.from_uplink(t, 0, None, ToParticipant::Idle);
    let out = drain(&mut r);
    assert!(
        out.contains(&RouterOutput::ToUplink {
            member: ParticipantId(50),
            msg: ToArbiter::Request { priority: Priority::NORMAL }
        }),
        "{out:?}"
    );
}

#[test]
fn a_retaken_floor_is_cut_by_max_talk_unkeys_every_radio_and_is_not_retaken() {
    // Safety of the retake path: the radio that retakes never keys itself, the radio carrying
    // it unkeys when max talk cuts it, and a stuck COR does not take the channel back.
    let t = Instant::now();
    let cfg = ArbiterConfig {
        max_talk: Duration::from_secs(30),
        no_media_timeout: Duration::from_secs(3600),
        ..Default::default()
    };
    let mut r = Router::new(vec![ChannelHost::Local(cfg)], vec![radio("radio1", 0), radio("radio2", 0)]);
    let console = r.add_remote(t, 9, "console@web", 0, Priority::DISPATCH).unwrap();
    r.press(t, 0, 0);
    r.from_peer(t, 9, console, ToArbiter::Request { priority: Priority::DISPATCH });
    // Meanwhile the router wants radio1 to carry the console (its port keys it only once its
    // squelch closes): from the retake on it must want radio1 unkeyed.
    drain(&mut r);
    let at = t + Duration::from_secs(1);
    r.from_peer(at, 9, console, ToArbiter::Release);
    let mut out = drain(&mut r);
    assert!(out.contains(&RouterOutput::TxRequest { port: 0, on: false }), "{out:?}");
    assert_eq!(r.holder(0), Some(Talker::Port(0)), "retaken");
    assert!(r.air(0).iter().all(|(p, _)| *p == 1), "only radio2 carries radio1: {:?}", r.air(0));
    // The retake restarted radio1's talk: max talk counts from it.
    let cut = r.poll_timeout().expect("max talk armed");
    assert!(cut > at && cut <= at + Duration::from_secs(30), "{:?}", cut - t);
    r.handle_timeout(cut);
    out.extend(drain(&mut r));
    assert_eq!(r.holder(0), None, "max talk frees the channel");
    assert!(
        out.iter().any(|o| matches!(o, RouterOutput::Revoked { port: 0, cause: RevokeCause::MaxTalkTime, .. })),
        "{out:?}"
    );
    assert!(!out.contains(&RouterOutput::TxRequest { port: 0, on: true }), "radio1 not keyed again: {out:?}");
    assert_eq!(
        out.iter().rev().find(|o| matches!(o, RouterOutput::TxRequest { port: 1, .. })),
        Some(&RouterOutput::TxRequest { port: 1, on: false })
    );
    assert!(r.air(0).is_empty());
    // COR still open (stuck): nothing takes the channel, keys or asks again, however long.
    for s in [31, 60, 600] {
        r.handle_timeout(t + Duration::from_secs(s));
    }
    let out = drain(&mut r);
    assert_eq!(r.holder(0), None, "{out:?}");
    assert!(!out.iter().any(|o| matches!(o, RouterOutput::TxRequest { on: true, .. })), "{out:?}");
    // A new key-up does.
    r.unpress(t, 0, 0);
    r.press(t + Duration::from_secs(601), 0, 0);
    assert_eq!(r.holder(0), Some(Talker::Port(0)));
}

#[test]
fn an_edge_radio_cut_by_the_hubs_max_talk_does_not_ask_again_and_unkeys_when_the_uplink_drops() {
    let t = Instant::now();
    let mut r = Router::new(vec![ChannelHost::Uplink], vec![radio("a", 0), radio("b", 0)]);
    let (ida, idb) = (ParticipantId(40), ParticipantId(41));
    r.uplink_up(t, &[(0, 0, ida), (1, 0, idb)]);
    r.press(t, 0, 0);
    r.from_uplink(t, 0, Some(ida), ToParticipant::Granted);
    r.from_uplink(t, 0, None, ToParticipant::Taken { holder: ida, priority: Priority::NORMAL });
    let out = drain(&mut r);
    assert!(out.contains(&RouterOutput::TxRequest { port: 1, on: true }), "b carries a: {out:?}");
    r.from_uplink(t, 0, Some(ida), ToParticipant::Revoke { cause: RevokeCause::MaxTalkTime });
    r.from_uplink(t, 0, None, ToParticipant::Idle);
    let out = drain(&mut r);
    assert!(
        !out.iter().any(|o| matches!(o, RouterOutput::ToUplink { msg: ToArbiter::Request { .. }, .. })),
        "no retake after max talk: {out:?}"
    );
    assert!(out.contains(&RouterOutput::TxRequest { port: 1, on: false }), "{out:?}");
    assert_eq!(r.holder(0), None);

    // Preempted (so it would retake), then the uplink drops: everything unkeys and nothing is
    // asked of a hub that is gone.
    r.unpress(t, 0, 0);
    r.press(t, 0, 0);
    r.from_uplink(t, 0, Some(ida), ToParticipant::Granted);
    r.from_uplink(t, 0, Some(ida), ToParticipant::Revoke { cause: RevokeCause::Preempted { by: ParticipantId(7) } });
    r.from_uplink(t, 0, None, ToParticipant::Taken { holder: ParticipantId(7), priority: Priority::DISPATCH });
    let out = drain(&mut r);
    assert!(out.contains(&RouterOutput::TxRequest { port: 1, on: true }), "b carries the dispatcher: {out:?}");
    r.uplink_down(t);
    let out = drain(&mut r);
    assert!(out.contains(&RouterOutput::TxRequest { port: 1, on: false }), "{out:?}");
    assert!(
        !out.iter().any(|o| matches!(o, RouterOutput::ToUplink { .. } | RouterOutput::TxRequest { on: true, .. })),
        "{out:?}"
    );
    assert_eq!(r.holder(0), None);
}

#[test]
fn a_desk_press_is_not_retaken() {
    let t = Instant::now();
    let desk_a = PortSpec { name: "d".into(), kind: PortKind::Desk, channels: vec![0], priority: Priority::NORMAL };
    let mut r = Router::new(hosted(1), vec![desk_a, emergency_radio("e", 0)]);
    r.press(t, 0, 0);
    r.press(t, 1, 0);
    r.unpress(t, 1, 0);
    assert_eq!(r.holder(0), None, "a desk's revoked PTT must be pressed again");
}

fn air_of(out: &[RouterOutput], channel: ChannelId) -> Option<Vec<(PortId, AirState)>> {
    out.iter().rev().find_map(|o| match o {
        RouterOutput::Air { channel: c, radios } if *c == channel => Some(radios.clone()),
        _ => None,
    })
}

const KEYED: RadioTx = RadioTx { keyed: true, blocked: None };

#[test]
fn preempting_a_receiving_radio_says_it_is_not_on_air_until_its_squelch_closes() {
    let t = Instant::now();
    let mut r = Router::new(hosted(1), vec![radio("radio1", 0), radio("radio2", 0)]);
    let console = r.add_remote(t, 9, "console@web", 0, Priority::DISPATCH).unwrap();
    r.press(t, 0, 0); // radio1 receives a field unit
    let out = drain(&mut r);
    assert_eq!(air_of(&out, 0), Some(vec![(1, AirState::Waiting(WaitReason::Keying))]));
    r.radio_tx(t, 1, KEYED);
    assert_eq!(air_of(&drain(&mut r), 0), Some(vec![(1, AirState::OnAir)]));
    // Its port says why it cannot key (simplex, receiving).
    r.radio_tx(t, 0, RadioTx { keyed: false, blocked: Some(WaitReason::Receiving) });
    assert_eq!(air_of(&drain(&mut r), 0), None, "radio1 is the talker: not listed");

    r.from_peer(t, 9, console, ToArbiter::Request { priority: Priority::DISPATCH });
    let out = drain(&mut r);
    assert!(out.contains(&RouterOutput::TxRequest { port: 0, on: true }));
    assert_eq!(
        air_of(&out, 0),
        Some(vec![(0, AirState::Waiting(WaitReason::Receiving)), (1, AirState::OnAir)]),
        "the console is told radio1 is not on air"
    );
    assert_eq!(r.air(0), [(0, AirState::Waiting(WaitReason::Receiving)), (1, AirState::OnAir)]);

    // Squelch closes (RX closed, nothing blocks): keying, then on air when its line is keyed.
    r.unpress(t, 0, 0);
    r.radio_tx(t, 0, RadioTx::default());
    assert_eq!(air_of(&drain(&mut r), 0), Some(vec![(0, AirState::Waiting(WaitReason::Keying)), (1, AirState::OnAir)]));
    r.radio_tx(t, 0, KEYED);
    assert_eq!(air_of(&drain(&mut r), 0), Some(vec![(0, AirState::OnAir), (1, AirState::OnAir)]));

    // The console releases: nobody should transmit any more (even while PTTs hang).
    r.from_peer(t, 9, console, ToArbiter::Release);
    assert_eq!(air_of(&drain(&mut r), 0), Some(vec![]));
    assert!(r.air(0).is_empty());
}

/// Index of the first output `pick` accepts (panics with the outputs if none).
fn index_of(out: &[RouterOutput], what: &str, pick: impl Fn(&RouterOutput) -> bool) -> usize {
    out.iter().position(pick).unwrap_or_else(|| panic!("no {what} in {out:?}"))
}

#[test]
fn a_talker_learns_a_radio_waits_before_it_learns_it_holds_the_floor() {
    // A console shows TRANSMITTING on `granted` unless it knows a radio waits: the air state
    // must reach it first, or it claims to be on air for an instant (seen in Chromium).
    let t = Instant::now();
    let mut r = Router::new(hosted(1), vec![radio("radio1", 0)]);
    let console = r.add_remote(t, 9, "console@web", 0, Priority::DISPATCH).unwrap();
    r.press(t, 0, 0);
    drain(&mut r);
    r.from_peer(t, 9, console, ToArbiter::Request { priority: Priority::DISPATCH });
    let out = drain(&mut r);
    let air = index_of(&out, "air", |o| matches!(o, RouterOutput::Air { channel: 0, radios } if !radios.is_empty()));
    let granted =
        index_of(&out, "granted", |o| matches!(o, RouterOutput::ToPeer { peer: 9, msg: ToParticipant::Granted, .. }));
    let taken = index_of(&out, "taken", |o| matches!(o, RouterOutput::ToPeer { msg: ToParticipant::Taken { .. }, .. }));
    assert!(air < granted && air < taken, "{out:?}");

    // Losing the floor: the talker hears it lost the floor before the emptied air state, so
    // it never shows TRANSMITTING between the two.
    r.from_peer(t, 9, console, ToArbiter::Release);
    r.unpress(t, 0, 0);
    drain(&mut r);
    r.from_peer(t, 9, console, ToArbiter::Request { priority: Priority::DISPATCH });
    r.radio_tx(t, 0, KEYED);
    drain(&mut r);
    r.press(t, 0, 0); // a simplex radio keyed for the console: its COR is ignored, no change
    r.from_peer(t, 9, console, ToArbiter::Release);
    let out = drain(&mut r);
    let idle = index_of(&out, "idle", |o| matches!(o, RouterOutput::ToPeer { msg: ToParticipant::Idle, .. }));
    let air =
        index_of(&out, "empty air", |o| matches!(o, RouterOutput::Air { channel: 0, radios } if radios.is_empty()));
    assert!(idle < air, "{out:?}");
}

#[test]
fn without_a_report_an_open_cor_is_the_reason_a_radio_waits() {
    let t = Instant::now();
    let mut r = Router::new(hosted(1), vec![radio("radio1", 0)]);
    let console = r.add_remote(t, 9, "console@web", 0, Priority::DISPATCH).unwrap();
    r.press(t, 0, 0);
    r.from_peer(t, 9, console, ToArbiter::Request { priority: Priority::DISPATCH });
    assert_eq!(r.air(0), [(0, AirState::Waiting(WaitReason::Receiving))]);
    r.radio_tx(t, 0, RadioTx { keyed: false, blocked: Some(WaitReason::Inhibited) });
    assert_eq!(r.air(0), [(0, AirState::Waiting(WaitReason::Inhibited))]);
}

#[test]
fn a_muted_channel_keys_no_radio_and_lists_none() {
    let t = Instant::now();
    let mut r = Router::new(hosted(2), vec![radio("a", 0), radio("b", 0), radio("c", 1)]);
    r.set_muted(t, 0, true);
    r.press(t, 0, 0);
    let out = drain(&mut r);
    assert!(!out.iter().any(|o| matches!(o, RouterOutput::TxRequest { .. })), "{out:?}");
    assert!(r.air(0).is_empty());
    r.set_muted(t, 0, false);
    let out = drain(&mut r);
    assert!(out.contains(&RouterOutput::TxRequest { port: 1, on: true }));
    assert_eq!(air_of(&out, 0), Some(vec![(1, AirState::Waiting(WaitReason::Keying))]));
    r.set_muted(t, 0, true);
    let out = drain(&mut r);
    assert!(out.contains(&RouterOutput::TxRequest { port: 1, on: false }));
    assert_eq!(air_of(&out, 0), Some(vec![]));
}

// Channel c and radio c go together: indexing by channel reads clearer than zipped iterators.
#[allow(clippy::needless_range_loop)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Press(PortId, ChannelId),
        Unpress(PortId, ChannelId),
        AllCall(bool),
        Patch(ChannelId, ChannelId),
        Unpatch(PatchId),
        Media(PortId),
        Wait(u64),
        /// Radio port reports its PTT line (keyed or not).
        Report(PortId, bool),
        Mute(ChannelId, bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0usize..4, 0usize..3).prop_map(|(p, c)| Op::Press(p, c)),
            (0usize..4, 0usize..3).prop_map(|(p, c)| Op::Unpress(p, c)),
            any::<bool>().prop_map(Op::AllCall),
            (0usize..3, 0usize..3).prop_map(|(a, b)| Op::Patch(a, b)),
            (0usize..4).prop_map(Op::Unpatch),
            (0usize..4).prop_map(Op::Media),
            (0u64..8000).prop_map(Op::Wait),
            (0usize..3, any::<bool>()).prop_map(|(p, k)| Op::Report(p, k)),
            (0usize..3, any::<bool>()).prop_map(|(c, m)| Op::Mute(c, m)),
        ]
    }

    proptest! {
        /// Whatever the presses, all-calls, patches, media and timeouts: each channel has at
        /// most one talker, a radio is asked to transmit exactly while someone else holds its
        /// channel, patched media reaches each channel at most once and never its origin, and
        /// once everything is released and unpatched every channel is idle and no radio keyed.
        /// The air state lists exactly the radios asked to transmit, on air only if their last
        /// report says their line is keyed; a radio still receiving never leaves its channel
        /// idle unless a timer cut it.
        #[test]
        fn routing_invariants_hold_with_all_calls_and_patches(
            priorities in prop::collection::vec(0u8..3, 3),
            ops in prop::collection::vec(op(), 0..80),
        ) {
            let cfg = ArbiterConfig { max_talk: Duration::from_secs(20), no_media_timeout: Duration::from_secs(5), ..Default::default() };
            let ports = vec![
                PortSpec { priority: Priority(priorities[0] * 100), ..radio("r0", 0) },
                PortSpec { priority: Priority(priorities[1] * 100), ..radio("r1", 1) },
                PortSpec { priority: Priority(priorities[2] * 100), ..radio("r2", 2) },
                desk("desk", vec![0, 1, 2]),
            ];
            let mut r = Router::new(vec![ChannelHost::Local(cfg); 3], ports);
            let mut now = Instant::now();
            let mut tx = [false; 3];
            let mut keyed = [false; 3];
            let mut muted = [false; 3];
            let mut pressed = [false; 3];
            let mut cut = [false; 3];
            let mut announced: Vec<Vec<(PortId, AirState)>> = vec![Vec::new(); 3];
            let mut patches = Vec::new();
            for op in ops {
                match op {
                    Op::Press(p, c) => {
                        if p == c {
                            pressed[p] = true;
                        }
                        r.press(now, p, c)
                    }
                    Op::Unpress(p, c) => {
                        if p == c {
                            pressed[p] = false;
                            cut[p] = false;
                        }
                        r.unpress(now, p, c)
                    }
                    Op::Report(p, k) => {
                        keyed[p] = k;
                        r.radio_tx(now, p, RadioTx { keyed: k, blocked: None });
                    }
                    Op::Mute(c, m) => {
                        muted[c] = m;
                        r.set_muted(now, c, m);
                    }
                    Op::AllCall(on) => r.all_call(now, 3, &[0, 1, 2], on),
                    Op::Patch(a, b) => {
                        if let Ok(p) = r.patch(now, a, b) {
                            patches.push(p);
                        }
                    }
                    Op::Unpatch(i) => {
                        if let Some(&p) = patches.get(i) {
                            r.unpatch(now, p);
                        }
                    }
                    Op::Media(p) => {
                        for c in 0..3 {
                            if r.media(now, MediaSource::Port(p), c).is_some() {
                                let reached: Vec<_> = r.patched(now, c, MediaSource::Port(p)).into_iter().map(|(c, _)| c).collect();
                                let mut unique = reached.clone();
                                unique.sort();
                                unique.dedup();
                                prop_assert_eq!(unique.len(), reached.len());
                                prop_assert!(!reached.contains(&c));
                            }
                        }
                    }
                    Op::Wait(ms) => {
                        now += Duration::from_millis(ms);
                        r.handle_timeout(now);
                    }
                }
                while let Some(out) = r.poll_output() {
                    match out {
                        RouterOutput::TxRequest { port, on } => {
                            prop_assert!(port < 3, "a desk is never keyed");
                            tx[port] = on;
                        }
                        RouterOutput::Air { channel, radios } => announced[channel] = radios,
                        RouterOutput::Revoked { port, cause: RevokeCause::MaxTalkTime | RevokeCause::NoMedia, .. } if port < 3 => cut[port] = true,
                        _ => {}
                    }
                }
                for c in 0..3 {
                    let holder = r.holder(c);
                    prop_assert_eq!(tx[c], !muted[c] && holder.is_some() && holder != Some(Talker::Port(c)), "radio {} on channel {}", c, c);
                    prop_assert_eq!(&announced[c], &r.air(c).to_vec());
                    match r.air(c) {
                        [] => prop_assert!(!tx[c]),
                        [(p, state)] => {
                            prop_assert!(tx[c] && *p == c);
                            prop_assert_eq!(*state == AirState::OnAir, keyed[c], "on air exactly when its line is keyed");
                        }
                        more => prop_assert!(false, "one radio per channel here: {:?}", more),
                    }
                    if pressed[c] && !cut[c] {
                        prop_assert!(holder.is_some(), "radio {} receives while its channel is idle", c);
                    }
                    let talking: Vec<_> = (0..4).filter(|&p| r.talking_on(p).any(|x| x == c)).collect();
                    prop_assert!(talking.len() <= 1, "two talkers on {}: {:?}", c, talking);
                    if let Some(Talker::Port(p)) = holder {
                        prop_assert_eq!(talking, vec![p]);
                    }
                }
            }
            // Everyone lets go, every patch is undone.
            for c in 0..3 {
                for p in 0..4 {
                    r.unpress(now, p, c);
                }
            }
            r.all_call(now, 3, &[0, 1, 2], false);
            for p in patches {
                r.unpatch(now, p);
            }
            while let Some(out) = r.poll_output() {
                if let RouterOutput::TxRequest { port, on } = out {
                    tx[port] = on;
                }
            }
            for c in 0..3 {
                prop_assert_eq!(r.holder(c), None);
                prop_assert!(!tx[c]);
                prop_assert!(r.air(c).is_empty());
            }
        }
    }
}

fn ended(out: &[RouterOutput]) -> Vec<(ChannelId, Talker, EndCause)> {
    out.iter()
        .filter_map(|o| match o {
            RouterOutput::Ended { channel, talker, cause } => Some((*channel, *talker, *cause)),
            _ => None,
        })
        .collect()
}

/// Every end of a transmission says how it ended, before the floor change that follows it:
/// released, preempted, max talk time (tot), no media, a peer's link lost.
#[test]
fn each_transmission_end_says_why_before_the_next_holder() {
    let t = Instant::now();
    let config = ArbiterConfig {
        max_talk: Duration::from_secs(10),
        no_media_timeout: Duration::from_secs(4),
        ..Default::default()
    };
    let mut r = Router::new(vec![ChannelHost::Local(config)], vec![radio("a", 0)]);
    let console = r.add_remote(t, 9, "console@web", 0, Priority::DISPATCH).unwrap();
    r.press(t, 0, 0);
    drain(&mut r);
    r.unpress(t, 0, 0);
    assert_eq!(ended(&drain(&mut r)), [(0, Talker::Port(0), EndCause::Released)]);
    r.press(t, 0, 0);
    drain(&mut r);
    r.from_peer(t, 9, console, ToArbiter::Request { priority: Priority::DISPATCH });
    let out = drain(&mut r);
    assert_eq!(ended(&out), [(0, Talker::Port(0), EndCause::Preempted)]);
    let at = |pick: &dyn Fn(&RouterOutput) -> bool| out.iter().position(pick).unwrap();
    assert!(
        at(&|o| matches!(o, RouterOutput::Ended { .. }))
            < at(&|o| matches!(o, RouterOutput::Floor { holder: Some(Talker::Remote(_)), .. }))
    );
    // The console keeps sending media; max talk time cuts it.
    for s in (0..10).step_by(2) {
        r.media(t + Duration::from_secs(s), MediaSource::Peer(9), 0);
    }
    r.handle_timeout(t + Duration::from_secs(10));
    assert_eq!(ended(&drain(&mut r)), [(0, Talker::Remote(console), EndCause::Tot)]);
    // The radio still receives: it gets the floor back; it sends nothing for no_media.
    r.handle_timeout(t + Duration::from_secs(16));
    let out = drain(&mut r);
    assert_eq!(ended(&out), [(0, Talker::Port(0), EndCause::NoMedia)], "{out:?}");
    r.unpress(t + Duration::from_secs(16), 0, 0);
    drain(&mut r);
    r.from_peer(t + Duration::from_secs(17), 9, console, ToArbiter::Request { priority: Priority::DISPATCH });
    drain(&mut r);
    r.remove_peer(t + Duration::from_secs(18), 9);
    assert_eq!(ended(&drain(&mut r)), [(0, Talker::Remote(console), EndCause::LinkLost)]);
}

// ---- emergency callers ----

fn dispatch_desk(name: &str, channel: ChannelId) -> PortSpec {
    PortSpec { name: name.into(), kind: PortKind::Desk, channels: vec![channel], priority: Priority::MAX_CONFIGURED }
}

#[test]
fn an_emergency_radio_denied_while_a_dispatcher_talks_preempts_it_at_once() {
    let t = Instant::now();
    let mut r = Router::new(hosted(1), vec![radio("a", 0), dispatch_desk("desk", 0), radio("b", 0)]);
    r.press(t, 1, 0); // the dispatcher (highest configured priority) talks
    drain(&mut r);
    r.press(t, 0, 0); // radio a keys up: busy
    assert!(drain(&mut r).contains(&RouterOutput::Busy { port: 0, channel: 0, holder: Some(Talker::Port(1)) }));
    r.set_emergency_caller(t, 0, Some(Caller::Port(0)));
    let out = drain(&mut r);
    assert!(out.contains(&RouterOutput::Talk { port: 1, channel: 0, on: false }), "{out:?}");
    assert!(out.contains(&RouterOutput::Talk { port: 0, channel: 0, on: true }), "{out:?}");
    assert_eq!(r.holder_participant(0).map(|(_, p)| p), Some(Priority::EMERGENCY));
    assert!(!out.contains(&RouterOutput::TxRequest { port: 2, on: false }), "b goes on carrying: now the emergency");
    // The dispatcher presses again: denied, the emergency caller keeps talking.
    r.unpress(t, 1, 0);
    r.press(t, 1, 0);
    assert!(drain(&mut r).contains(&RouterOutput::Busy { port: 1, channel: 0, holder: Some(Talker::Port(0)) }));
    // Acknowledged: a's later key-ups have its own priority again.
    r.set_emergency_caller(t, 0, None);
    r.unpress(t, 0, 0);
    r.unpress(t, 1, 0);
    drain(&mut r);
    r.press(t, 1, 0);
    r.press(t, 0, 0);
    assert!(drain(&mut r).contains(&RouterOutput::Busy { port: 0, channel: 0, holder: Some(Talker::Port(1)) }));
}

#[test]
fn an_emergency_caller_holding_the_floor_cannot_be_preempted_by_any_configured_priority() {
    let t = Instant::now();
    let mut r = Router::new(hosted(1), vec![radio("a", 0), dispatch_desk("desk", 0)]);
    let console = r.add_remote(t, 4, "console@web", 0, Priority::NORMAL).unwrap();
    r.from_peer(t, 4, console, ToArbiter::Request { priority: Priority::NORMAL });
    drain(&mut r);
    r.set_emergency_caller(t, 0, Some(Caller::Member(console)));
    assert!(drain(&mut r).is_empty(), "promoted in place: nothing sent, nobody keyed again");
    r.press(t, 1, 0);
    let out = drain(&mut r);
    assert!(
        out.contains(&RouterOutput::Busy { port: 1, channel: 0, holder: Some(Talker::Remote(console)) }),
        "{out:?}"
    );
    // A member that is not the caller gets no emergency priority.
    let other = r.add_remote(t, 5, "console@other", 0, Priority::NORMAL).unwrap();
    r.from_peer(t, 5, other, ToArbiter::Request { priority: Priority::EMERGENCY });
    assert_eq!(r.holder(0), Some(Talker::Remote(console)));
}

#[test]
fn a_console_emergency_that_keys_radios_unkeys_them_when_the_console_is_lost_or_times_out() {
    let t = Instant::now();
    let cfg = ArbiterConfig {
        max_talk: Duration::from_secs(30),
        no_media_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let mut r = Router::new(vec![ChannelHost::Local(cfg)], vec![radio("a", 0), dispatch_desk("desk", 0)]);
    // Error: the console's link is lost while its emergency call keys radio a.
    let console = r.add_remote(t, 4, "console@web", 0, Priority::NORMAL).unwrap();
    r.press(t, 1, 0);
    drain(&mut r);
    r.set_emergency_caller(t, 0, Some(Caller::Member(console)));
    r.from_peer(t, 4, console, ToArbiter::Request { priority: Priority::NORMAL });
    let out = drain(&mut r);
    assert!(out.contains(&RouterOutput::Talk { port: 1, channel: 0, on: false }), "the dispatcher was preempted");
    assert!(!out.contains(&RouterOutput::TxRequest { port: 0, on: false }));
    r.radio_tx(t, 0, RadioTx { keyed: true, blocked: None });
    drain(&mut r);
    r.remove_peer(t, 4);
    assert!(drain(&mut r).contains(&RouterOutput::TxRequest { port: 0, on: false }), "link lost: unkeyed");
    // Time-out: a new emergency caller that sends no audio is revoked (no media), one that
    // talks on is cut at max talk; either way the radio unkeys.
    let console = r.add_remote(t, 6, "console@web2", 0, Priority::NORMAL).unwrap();
    r.set_emergency_caller(t, 0, Some(Caller::Member(console)));
    r.from_peer(t, 6, console, ToArbiter::Request { priority: Priority::NORMAL });
    assert!(drain(&mut r).contains(&RouterOutput::TxRequest { port: 0, on: true }));
    r.handle_timeout(t + Duration::from_secs(5));
    assert!(drain(&mut r).contains(&RouterOutput::TxRequest { port: 0, on: false }), "no media: unkeyed");
    r.from_peer(t, 6, console, ToArbiter::Request { priority: Priority::NORMAL });
    drain(&mut r);
    let mut now = t + Duration::from_secs(5);
    while now < t + Duration::from_secs(36) {
        now += Duration::from_secs(1);
        let _ = r.media(now, MediaSource::Peer(6), 0);
        r.handle_timeout(now);
        if drain(&mut r).contains(&RouterOutput::TxRequest { port: 0, on: false }) {
            break;
        }
    }
    assert!(now <= t + Duration::from_secs(36), "max talk cut the emergency call too");
    assert_eq!(r.holder(0), None);
}
