use serde_json::json;

use super::*;

/// Plays Janus: reads what the session sends, answers like Janus 1.1 does.
struct Harness {
    s: Session,
    now: Instant,
    sent: Vec<Value>,
    other: Vec<Output>,
}

const SESSION: u64 = 1000;

fn spec(channel: &str, room: u64) -> ChannelSpec {
    ChannelSpec {
        channel: channel.into(),
        room: RoomSettings {
            room,
            description: channel.into(),
            secret: Some("sec".into()),
            pin: Some("1234".into()),
            admin_key: None,
            publishers: 10,
        },
        create: true,
        display: format!("edge/{channel}"),
    }
}

impl Harness {
    fn new(channels: Vec<ChannelSpec>) -> Self {
        let now = Instant::now();
        let s = Session::new(SessionConfig::default(), channels, &[], now);
        let mut h = Self { s, now, sent: Vec::new(), other: Vec::new() };
        h.drain();
        h
    }

    fn drain(&mut self) {
        while let Some(o) = self.s.poll_output() {
            match o {
                Output::Send(t) => self.sent.push(serde_json::from_str(&t).unwrap()),
                o => self.other.push(o),
            }
        }
    }

    /// The oldest unanswered request whose `janus` (and body `request`) match.
    fn take(&mut self, janus: &str, request: Option<&str>) -> Value {
        let i = self
            .sent
            .iter()
            .position(|m| m["janus"] == janus && request.is_none_or(|r| m["body"]["request"] == r))
            .unwrap_or_else(|| panic!("no {janus} {request:?} sent; sent: {:#?}", self.sent));
        self.sent.remove(i)
    }

    fn feed(&mut self, v: Value) {
        self.s.handle_text(self.now, &v.to_string());
        self.drain();
    }

    fn outputs(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.other)
    }

    fn failed(&mut self) -> String {
        match self.outputs().into_iter().find(|o| matches!(o, Output::Failed(_))) {
            Some(Output::Failed(r)) => r,
            _ => panic!("no failure"),
        }
    }

    fn success(&mut self, req: &Value, data: Value) {
        self.feed(json!({"janus": "success", "transaction": req["transaction"], "session_id": SESSION, "data": data}));
    }

    fn plugin_success(&mut self, req: &Value, data: Value) {
        self.feed(json!({"janus": "success", "transaction": req["transaction"], "session_id": SESSION,
            "sender": req["handle_id"], "plugindata": {"plugin": p::VIDEOROOM, "data": data}}));
    }

    fn ack(&mut self, req: &Value) {
        self.feed(json!({"janus": "ack", "transaction": req["transaction"], "session_id": SESSION}));
    }

    fn plugin_event(&mut self, req: &Value, data: Value, jsep: Option<Value>) {
        self.ack(req);
        let mut m = json!({"janus": "event", "transaction": req["transaction"], "session_id": SESSION,
            "sender": req["handle_id"], "plugindata": {"plugin": p::VIDEOROOM, "data": data}});
        if let Some(j) = jsep {
            m["jsep"] = j;
        }
        self.feed(m);
    }

    fn push(&mut self, handle: u64, data: Value, jsep: Option<Value>) {
        let mut m = json!({"janus": "event", "session_id": SESSION, "sender": handle,
            "plugindata": {"plugin": p::VIDEOROOM, "data": data}});
        if let Some(j) = jsep {
            m["jsep"] = j;
        }
        self.feed(m);
    }

    /// create → attach ×2 per channel, with handle ids 100+2i (publisher), 101+2i.
    fn attach_all(&mut self) {
        let create = self.take("create", None);
        assert!(create.get("session_id").is_none());
        self.success(&create, json!({"id": SESSION}));
        let n = self.s.chans.len();
        for i in 0..2 * n {
            let a = self.take("attach", None);
            assert_eq!((a["session_id"].as_u64(), a["plugin"].as_str()), (Some(SESSION), Some(p::VIDEOROOM)));
            self.success(&a, json!({"id": 100 + i as u64}));
        }
    }

    /// The room passes its check like a room made with our PIN and secret: `edit` with our
    /// secret accepted, with a wrong one refused, a join without the PIN refused.
    fn pass_checks(&mut self, room: &Value) {
        let edit = self.take("message", Some("edit"));
        assert_eq!(edit["body"], json!({"request": "edit", "room": room, "secret": "sec"}));
        self.plugin_success(&edit, json!({"videoroom": "edited", "room": room, "permanent": false}));
        let edit = self.take("message", Some("edit"));
        assert_ne!(edit["body"]["secret"], "sec");
        self.plugin_success(
            &edit,
            json!({"videoroom": "event", "error_code": 433, "error": "Unauthorized (wrong secret)"}),
        );
        let probe = self.take("message", Some("join"));
        assert_eq!(probe["body"]["ptype"], "publisher");
        assert!(probe["body"].get("pin").is_none(), "{probe}");
        self.plugin_event(
            &probe,
            json!({"videoroom": "event", "error_code": 433, "error": "Unauthorized (wrong pin)"}),
            None,
        );
        assert!(!self.s.is_failed(), "{:?}", self.other);
    }

    /// Room exists → checked → join → offer → publish → answer → configure send:false, for
    /// channel `ch` (publisher handle 100+2ch), with `others` already publishing.
    fn publish(&mut self, ch: Ch, me: u64, others: Value) {
        let exists = self.take("message", Some("exists"));
        assert_eq!(exists["handle_id"], 100 + 2 * ch as u64);
        let room = exists["body"]["room"].clone();
        self.plugin_success(&exists, json!({"videoroom": "success", "room": room, "exists": true}));
        self.pass_checks(&room);
        let join = self.take("message", Some("join"));
        assert_eq!(join["body"]["pin"], "1234");
        assert_eq!(join["body"]["ptype"], "publisher");
        self.plugin_event(
            &join,
            json!({"videoroom": "joined", "room": room, "id": me, "private_id": me + 5000, "publishers": others}),
            None,
        );
        let outs = self.outputs();
        assert!(outs.contains(&Output::Joined { ch, id: me }), "{outs:?}");
        assert!(outs.contains(&Output::NeedOffer { ch }), "{outs:?}");
        self.s.publisher_offer(self.now, ch, "v=0\r\noffer".into(), "0".into());
        self.drain();
        let publish = self.take("message", Some("publish"));
        assert_eq!(publish["jsep"], json!({"type": "offer", "sdp": "v=0\r\noffer", "trickle": false}));
        self.plugin_event(
            &publish,
            json!({"videoroom": "event", "room": room, "configured": "ok"}),
            Some(json!({"type": "answer", "sdp": ANSWER})),
        );
        assert!(self.outputs().contains(&Output::Answer { ch, sdp: ANSWER.into() }));
        let configure = self.take("message", Some("configure"));
        assert_eq!(configure["body"]["streams"], json!([{"mid": "0", "send": false}]));
        self.plugin_event(&configure, json!({"videoroom": "event", "configured": "ok"}), None);
        assert!(self.outputs().contains(&Output::Sending { ch, on: false }));
    }
}

const ANSWER: &str = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=candidate:1 1 udp 1 127.0.0.2 20000 typ host\r\n";

fn publisher(id: u64) -> Value {
    json!({"id": id, "display": format!("box{id}"), "streams": [{"type": "audio", "mindex": 0, "mid": "0", "codec": "opus"}]})
}

fn sub_stream(mid: &str, feed: Option<u64>) -> Value {
    match feed {
        Some(f) => {
            json!({"type": "audio", "active": true, "mindex": 0, "mid": mid, "send": true, "feed_id": f, "feed_mid": "0"})
        }
        None => json!({"type": "audio", "active": false, "mindex": 0, "mid": mid, "send": true}),
    }
}

#[test]
fn publishes_idle_and_subscribes_to_the_others_as_they_come_and_go() {
    let mut h = Harness::new(vec![spec("ops", 7)]);
    h.attach_all();
    h.publish(0, 12, json!([publisher(11)]));
    assert!(h.s.all_published());
    assert_eq!(h.s.publisher_id(0), Some(12));

    // Publisher 11 was there: one subscription join (handle 101) with its audio.
    let join = h.take("message", Some("join"));
    assert_eq!(join["handle_id"], 101);
    assert_eq!(join["body"]["ptype"], "subscriber");
    assert_eq!(join["body"]["private_id"], 5012);
    assert_eq!(join["body"]["pin"], "1234");
    assert_eq!(join["body"]["streams"], json!([{"feed": 11, "mid": "0"}]));
    h.plugin_event(
        &join,
        json!({"videoroom": "attached", "room": 7, "streams": [sub_stream("0", Some(11))]}),
        Some(json!({"type": "offer", "sdp": "v=0\r\nsub1"})),
    );
    let outs = h.outputs();
    assert!(matches!(&outs[0], Output::Streams { ch: 0, streams } if streams[0].feed == Some(11)), "{outs:?}");
    assert_eq!(outs[1], Output::Offer { ch: 0, sdp: "v=0\r\nsub1".into() });
    h.s.subscriber_answer(h.now, 0, "v=0\r\nanswer1".into());
    h.drain();
    let start = h.take("message", Some("start"));
    assert_eq!(start["jsep"]["type"], "answer");
    h.plugin_event(&start, json!({"videoroom": "event", "started": "ok"}), None);

    // Publisher 13 arrives: an update; Janus postpones it, then pushes the offer.
    h.push(100, json!({"videoroom": "event", "room": 7, "publishers": [publisher(13)]}), None);
    let outs = h.outputs();
    assert!(matches!(&outs[0], Output::Roster { ch: 0, publishers } if publishers.len() == 2), "{outs:?}");
    let update = h.take("message", Some("update"));
    assert_eq!(update["body"]["subscribe"], json!([{"feed": 13, "mid": "0"}]));
    // Our own appearance in the room is no reason to subscribe.
    h.push(100, json!({"videoroom": "event", "room": 7, "publishers": [publisher(12)]}), None);
    h.plugin_event(&update, json!({"videoroom": "updating", "room": 7}), None);
    assert!(h.sent.is_empty(), "{:?}", h.sent);
    h.push(
        101,
        json!({"videoroom": "updated", "room": 7, "streams": [sub_stream("0", Some(11)), sub_stream("1", Some(13))]}),
        Some(json!({"type": "offer", "sdp": "v=0\r\nsub2"})),
    );
    assert!(h.outputs().contains(&Output::Offer { ch: 0, sdp: "v=0\r\nsub2".into() }));

    // 11 leaves: Janus renegotiates by itself; no request from us.
    h.push(100, json!({"videoroom": "event", "room": 7, "unpublished": 11}), None);
    assert!(h.sent.is_empty());
    h.push(
        101,
        json!({"videoroom": "updated", "room": 7, "streams": [sub_stream("0", None), sub_stream("1", Some(13))]}),
        Some(json!({"type": "offer", "sdp": "v=0\r\nsub3"})),
    );
    let outs = h.outputs();
    assert!(outs.iter().any(|o| matches!(o, Output::Streams { streams, .. } if !streams[0].active)));
    // 11 comes back (new publisher): subscribed again.
    h.push(100, json!({"videoroom": "event", "room": 7, "publishers": [publisher(11)]}), None);
    let update = h.take("message", Some("update"));
    assert_eq!(update["body"]["subscribe"], json!([{"feed": 11, "mid": "0"}]));
    assert!(!h.s.is_failed());
}

#[test]
fn creates_a_missing_room_and_tolerates_losing_the_race() {
    let mut h = Harness::new(vec![spec("ops", 7)]);
    h.attach_all();
    let exists = h.take("message", Some("exists"));
    h.plugin_success(&exists, json!({"videoroom": "success", "room": 7, "exists": false}));
    let create = h.take("message", Some("create"));
    assert_eq!(create["body"]["room"], 7);
    assert_eq!(create["body"]["secret"], "sec");
    assert_eq!(create["body"]["audiocodec"], "opus");
    // Someone created it in between: checked like any room found, then joined.
    h.plugin_success(&create, json!({"videoroom": "event", "error_code": 427, "error": "Room 7 already exists"}));
    h.pass_checks(&json!(7));
    let join = h.take("message", Some("join"));
    assert_eq!(join["body"]["room"], 7);
    assert!(!h.s.is_failed());
}

#[test]
fn one_that_creates_no_rooms_waits_for_a_missing_room_asking_twice_a_second() {
    let mut s = spec("ops", 7);
    s.create = false;
    let mut h = Harness::new(vec![s]);
    h.attach_all();
    let t0 = h.now;
    for round in 0..3 {
        let exists = h.take("message", Some("exists"));
        h.plugin_success(&exists, json!({"videoroom": "success", "room": 7, "exists": false}));
        assert!(h.sent.is_empty(), "never a create: {:?}", h.sent);
        let outs = h.outputs();
        assert_eq!(outs, if round == 0 { vec![Output::RoomMissing { ch: 0 }] } else { vec![] }, "said once");
        assert!(h.s.waiting_for_room());
        assert_eq!(h.s.poll_timeout(), Some(h.now + ROOM_RECHECK));
        h.now += ROOM_RECHECK;
        h.s.handle_timeout(h.now);
        h.drain();
    }
    assert!(h.now - t0 > Duration::from_secs(1) && !h.s.is_failed(), "waiting is no failure");
    // The floor host made it: checked, then joined.
    let exists = h.take("message", Some("exists"));
    h.plugin_success(&exists, json!({"videoroom": "success", "room": 7, "exists": true}));
    assert!(!h.s.waiting_for_room());
    h.pass_checks(&json!(7));
    let join = h.take("message", Some("join"));
    assert_eq!(join["body"]["pin"], "1234");
}

/// A room that exists, checked with these answers from Janus: `edit` with our secret / a wrong
/// secret accepted, a join without the PIN / with ours accepted. The refusal, if any.
fn checked(secret_ok: bool, wrong_secret_ok: bool, pin_missing_ok: bool, pin_ok: bool) -> (Harness, Option<RoomFault>) {
    let mut h = Harness::new(vec![spec("ops", 7)]);
    h.attach_all();
    let exists = h.take("message", Some("exists"));
    h.plugin_success(&exists, json!({"videoroom": "success", "room": 7, "exists": true}));
    let edited = json!({"videoroom": "edited", "room": 7});
    let unauthorized =
        |what: &str| json!({"videoroom": "event", "error_code": 433, "error": format!("Unauthorized (wrong {what})")});
    let edit = h.take("message", Some("edit"));
    h.plugin_success(&edit, if secret_ok { edited.clone() } else { unauthorized("secret") });
    if secret_ok {
        let edit = h.take("message", Some("edit"));
        h.plugin_success(&edit, if wrong_secret_ok { edited } else { unauthorized("secret") });
        if !wrong_secret_ok {
            let probe = h.take("message", Some("join"));
            if pin_missing_ok {
                h.plugin_event(&probe, json!({"videoroom": "joined", "room": 7, "id": 55, "publishers": []}), None);
            } else {
                let missing =
                    json!({"videoroom": "event", "error_code": 429, "error": "Missing mandatory element (pin)"});
                h.plugin_event(&probe, missing, None);
                let join = h.take("message", Some("join"));
                let reply =
                    if pin_ok { json!({"videoroom": "joined", "room": 7, "id": 12}) } else { unauthorized("pin") };
                h.plugin_event(&join, reply, None);
            }
        }
    }
    let outs = h.outputs();
    let fault = outs.iter().find_map(|o| match o {
        Output::RoomRefused { fault, reason, .. } => {
            assert!(reason.contains("room 7 of channel ops"), "{reason}");
            Some(*fault)
        }
        _ => None,
    });
    if fault.is_some() {
        let failed = outs.iter().position(|o| matches!(o, Output::Failed(r) if r.starts_with("room refused: ")));
        let refused = outs.iter().position(|o| matches!(o, Output::RoomRefused { .. }));
        assert!(failed > refused, "refused, then failed: {outs:?}");
    }
    h.other = outs;
    (h, fault)
}

#[test]
fn a_room_without_the_protection_asked_for_is_refused_before_anything_is_published() {
    assert_eq!(checked(false, false, false, true).1, Some(RoomFault::SecretRefused), "someone else's secret");
    assert_eq!(checked(true, true, false, true).1, Some(RoomFault::NoSecret), "any secret works");
    assert_eq!(checked(true, false, true, true).1, Some(RoomFault::NoPin), "a join without the PIN works");
    assert_eq!(checked(true, false, false, false).1, Some(RoomFault::PinRefused), "another PIN");
    for (h, fault) in [checked(false, false, false, true), checked(true, false, true, true)] {
        assert!(fault.is_some());
        assert!(h.s.is_failed());
        assert!(h.sent.iter().all(|m| m["body"]["request"] != "publish"), "{:?}", h.sent);
        assert!(
            !h.other.iter().any(|o| matches!(o, Output::NeedOffer { .. } | Output::Joined { .. })),
            "{:?}",
            h.other
        );
    }
    let (mut h, fault) = checked(true, false, false, true);
    assert_eq!(fault, None, "our PIN and secret, and nobody else's: fine");
    assert!(h.outputs().contains(&Output::NeedOffer { ch: 0 }));
}

#[test]
fn only_what_the_config_asks_for_is_checked() {
    // No secret, no PIN: straight to the join.
    let mut s = spec("ops", 7);
    (s.room.secret, s.room.pin) = (None, None);
    let mut h = Harness::new(vec![s]);
    h.attach_all();
    let exists = h.take("message", Some("exists"));
    h.plugin_success(&exists, json!({"videoroom": "success", "room": 7, "exists": true}));
    let join = h.take("message", Some("join"));
    assert!(join["body"].get("pin").is_none());
    // A room that wants a PIN this box does not have is refused, saying so.
    h.plugin_event(
        &join,
        json!({"videoroom": "event", "error_code": 429, "error": "Missing mandatory element (pin)"}),
        None,
    );
    let outs = h.outputs();
    assert!(
        matches!(&outs[0], Output::RoomRefused { fault: RoomFault::PinRefused, reason, .. } if reason.contains("this box has none")),
        "{outs:?}"
    );
    // A PIN but no secret (an edge): only the PIN probe.
    let mut s = spec("ops", 7);
    s.room.secret = None;
    let mut h = Harness::new(vec![s]);
    h.attach_all();
    let exists = h.take("message", Some("exists"));
    h.plugin_success(&exists, json!({"videoroom": "success", "room": 7, "exists": true}));
    let probe = h.take("message", Some("join"));
    assert!(probe["body"].get("pin").is_none());
    assert!(h.sent.is_empty());
}

#[test]
fn sending_follows_the_floor_one_configure_at_a_time() {
    let mut h = Harness::new(vec![spec("ops", 7)]);
    h.attach_all();
    // Wanted before publishing: applied once published.
    h.s.set_sending(h.now, 0, true);
    h.drain();
    assert!(h.sent.iter().all(|m| m["body"]["request"] != "configure"));
    let exists = h.take("message", Some("exists"));
    h.plugin_success(&exists, json!({"videoroom": "success", "room": 7, "exists": true}));
    h.pass_checks(&json!(7));
    let join = h.take("message", Some("join"));
    h.plugin_event(&join, json!({"videoroom": "joined", "room": 7, "id": 12}), None);
    h.s.publisher_offer(h.now, 0, "v=0\r\n".into(), "a0".into());
    h.drain();
    let publish = h.take("message", Some("publish"));
    h.plugin_event(
        &publish,
        json!({"videoroom": "event", "configured": "ok"}),
        Some(json!({"type": "answer", "sdp": ANSWER})),
    );
    // Janus relays new publishers already: nothing to configure.
    assert!(h.sent.iter().all(|m| m["body"]["request"] != "configure"), "{:?}", h.sent);
    h.outputs();

    h.s.set_sending(h.now, 0, false);
    h.s.set_sending(h.now, 0, true);
    h.s.set_sending(h.now, 0, false);
    h.drain();
    let c1 = h.take("message", Some("configure"));
    assert_eq!(c1["body"]["streams"], json!([{"mid": "a0", "send": false}]));
    assert!(h.sent.is_empty(), "one configure in flight");
    h.plugin_event(&c1, json!({"videoroom": "event", "configured": "ok"}), None);
    assert_eq!(h.outputs(), [Output::Sending { ch: 0, on: false }]);
    assert!(h.sent.is_empty(), "already where wanted");
    h.s.set_sending(h.now, 0, true);
    h.drain();
    let c2 = h.take("message", Some("configure"));
    assert_eq!(c2["body"]["streams"][0]["send"], true);
    h.plugin_event(&c2, json!({"videoroom": "event", "configured": "ok"}), None);
    assert_eq!(h.outputs(), [Output::Sending { ch: 0, on: true }]);
}

#[test]
fn listen_mutes_every_stream_of_the_channel_without_renegotiating() {
    let mut h = Harness::new(vec![spec("ops", 7)]);
    h.attach_all();
    h.publish(0, 12, json!([publisher(11)]));
    h.s.set_listening(h.now, 0, false);
    h.drain();
    assert!(h.sent.iter().all(|m| m["body"]["request"] != "configure"), "nothing to mute yet");
    let join = h.take("message", Some("join"));
    h.plugin_event(
        &join,
        json!({"videoroom": "attached", "room": 7, "streams": [sub_stream("0", Some(11)), sub_stream("1", None)]}),
        Some(json!({"type": "offer", "sdp": "v=0\r\n"})),
    );
    let mute = h.take("message", Some("configure"));
    assert_eq!(mute["handle_id"], 101);
    assert_eq!(mute["body"]["streams"], json!([{"mid": "0", "send": false}]), "inactive m-lines are left alone");
    assert!(mute.get("jsep").is_none());
    h.plugin_event(&mute, json!({"videoroom": "event", "configured": "ok"}), None);
    assert!(h.sent.iter().all(|m| m["body"]["request"] != "configure"));
    h.s.set_listening(h.now, 0, true);
    h.drain();
    let unmute = h.take("message", Some("configure"));
    assert_eq!(unmute["body"]["streams"], json!([{"mid": "0", "send": true}]));
}

#[test]
fn moderate_needs_a_known_feed_and_reports_the_result() {
    let mut h = Harness::new(vec![spec("ops", 7)]);
    h.attach_all();
    assert!(!h.s.moderate(h.now, 0, 11, true), "not in the room yet");
    h.publish(0, 12, json!([publisher(11)]));
    assert!(!h.s.moderate(h.now, 0, 99, true), "unknown feed");
    assert!(h.s.moderate(h.now, 0, 11, true));
    h.drain();
    let m = h.take("message", Some("moderate"));
    assert_eq!(
        m["body"],
        json!({"request": "moderate", "room": 7, "secret": "sec", "id": 11, "mid": "0", "mute": true})
    );
    h.plugin_success(&m, json!({"videoroom": "success"}));
    assert!(h.outputs().contains(&Output::ModerateDone { ch: 0, feed: 11, mute: true, result: Ok(()) }));
    assert!(h.s.moderate(h.now, 0, 11, false));
    h.drain();
    let m = h.take("message", Some("moderate"));
    h.plugin_success(&m, json!({"videoroom": "event", "error_code": 433, "error": "Unauthorized (wrong secret)"}));
    let outs = h.outputs();
    assert!(
        matches!(&outs[0], Output::ModerateDone { feed: 11, mute: false, result: Err(e), .. } if e.contains("433")),
        "{outs:?}"
    );
    // Being moderated ourselves is reported.
    h.push(100, json!({"videoroom": "event", "room": 7, "id": 12, "mid": "0", "moderation": "muted"}), None);
    assert_eq!(h.outputs(), [Output::Moderated { ch: 0, muted: true }]);
    assert!(!h.s.is_failed());
}

#[test]
fn a_feed_gone_before_the_subscription_is_forgotten_not_fatal() {
    let mut h = Harness::new(vec![spec("ops", 7)]);
    h.attach_all();
    h.publish(0, 12, json!([publisher(11), publisher(13)]));
    let join = h.take("message", Some("join"));
    h.plugin_event(&join, json!({"videoroom": "event", "error_code": 428, "error": "No such feed (11)"}), None);
    assert!(!h.s.is_failed());
    // The join is retried without them; they come back with a new `publishers` event.
    assert!(h.sent.is_empty());
    h.push(100, json!({"videoroom": "event", "room": 7, "publishers": [publisher(13)]}), None);
    let join = h.take("message", Some("join"));
    assert_eq!(join["body"]["streams"], json!([{"feed": 13, "mid": "0"}]));
}

#[test]
fn keepalives_and_request_timeouts() {
    let mut h = Harness::new(vec![spec("ops", 7)]);
    let t0 = h.now;
    // The create itself has a deadline.
    assert_eq!(h.s.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    h.attach_all();
    h.publish(0, 12, json!([]));
    assert_eq!(h.s.poll_timeout(), Some(t0 + Duration::from_secs(25)));
    h.now = t0 + Duration::from_secs(25);
    h.s.handle_timeout(h.now);
    h.drain();
    let k = h.take("keepalive", None);
    assert_eq!(k["session_id"], SESSION);
    assert_eq!(h.s.poll_timeout(), Some(h.now + Duration::from_secs(10)), "waiting for the ack");
    h.ack(&k);
    assert_eq!(h.s.poll_timeout(), Some(t0 + Duration::from_secs(50)));
    // A keepalive nobody acknowledges ends the session.
    h.now = t0 + Duration::from_secs(50);
    h.s.handle_timeout(h.now);
    h.drain();
    h.take("keepalive", None);
    h.now += Duration::from_secs(10);
    h.s.handle_timeout(h.now);
    h.drain();
    let reason = h.failed();
    assert!(reason.contains("keepalive"), "{reason}");
    assert_eq!(h.s.poll_timeout(), None);
}

#[test]
fn losing_the_session_fails_once() {
    let lost = [
        json!({"janus": "timeout", "session_id": SESSION}),
        json!({"janus": "hangup", "session_id": SESSION, "sender": 101, "reason": "ICE failed"}),
        json!({"janus": "detached", "session_id": SESSION, "sender": 100}),
        json!({"janus": "event", "session_id": SESSION, "sender": 100,
               "plugindata": {"plugin": p::VIDEOROOM, "data": {"videoroom": "destroyed", "room": 7}}}),
        json!({"janus": "event", "session_id": SESSION, "sender": 100,
               "plugindata": {"plugin": p::VIDEOROOM, "data": {"videoroom": "event", "leaving": "ok", "reason": "kicked"}}}),
        json!({"janus": "error", "session_id": SESSION, "error": {"code": 458, "reason": "No such session"}}),
    ];
    for msg in lost {
        let mut h = Harness::new(vec![spec("ops", 7)]);
        h.attach_all();
        h.publish(0, 12, json!([]));
        h.feed(msg.clone());
        let outs = h.outputs();
        assert_eq!(outs.iter().filter(|o| matches!(o, Output::Failed(_))).count(), 1, "{msg}: {outs:?}");
        // Nothing more after a failure.
        h.feed(msg.clone());
        h.s.set_sending(h.now, 0, true);
        h.s.handle_timeout(h.now + Duration::from_secs(100));
        h.drain();
        assert!(h.outputs().is_empty() && h.sent.is_empty(), "{msg}");
    }
    // A 458 in reply to a request.
    let mut h = Harness::new(vec![spec("ops", 7)]);
    h.attach_all();
    let exists = h.take("message", Some("exists"));
    h.feed(json!({"janus": "error", "transaction": exists["transaction"], "error": {"code": 458, "reason": "No such session"}}));
    assert!(h.failed().contains("session not found"));
}

#[test]
fn malformed_input_fails_the_session_and_unknown_input_is_ignored() {
    let mut h = Harness::new(vec![spec("ops", 7)]);
    h.attach_all();
    h.feed(json!({"janus": "slowlink", "session_id": SESSION, "sender": 100}));
    h.feed(json!({"janus": "webrtcup", "session_id": SESSION, "sender": 100}));
    h.feed(json!({"janus": "event", "session_id": SESSION, "sender": 999, "plugindata": {"plugin": p::VIDEOROOM, "data": {"videoroom": "event"}}}));
    h.feed(json!({"janus": "ack", "transaction": "not-ours"}));
    h.feed(json!({"janus": "event", "session_id": 5, "sender": 100}));
    assert!(!h.s.is_failed(), "{:?}", h.outputs());
    h.s.handle_text(h.now, "{\"janus\": ");
    h.drain();
    assert!(h.failed().contains("malformed"));
}

#[test]
fn unexpected_replies_fail_instead_of_panicking() {
    let mut h = Harness::new(vec![spec("ops", 7)]);
    let create = h.take("create", None);
    h.success(&create, json!({}));
    assert!(h.failed().contains("no session id"));

    let mut h = Harness::new(vec![spec("ops", 7)]);
    h.attach_all();
    let exists = h.take("message", Some("exists"));
    h.plugin_success(&exists, json!({"videoroom": "created", "room": 7}));
    assert!(h.failed().contains("exists"));

    // A publish answer without candidates names the likely cause.
    let mut h = Harness::new(vec![spec("ops", 7)]);
    h.attach_all();
    let exists = h.take("message", Some("exists"));
    h.plugin_success(&exists, json!({"videoroom": "success", "room": 7, "exists": true}));
    h.pass_checks(&json!(7));
    let join = h.take("message", Some("join"));
    h.plugin_event(&join, json!({"videoroom": "joined", "room": 7, "id": 12}), None);
    h.s.publisher_offer(h.now, 0, "v=0\r\n".into(), "0".into());
    h.drain();
    let publish = h.take("message", Some("publish"));
    h.plugin_event(
        &publish,
        json!({"videoroom": "event", "configured": "ok"}),
        Some(json!({"type": "answer", "sdp": "v=0\r\n"})),
    );
    assert!(h.failed().contains("no ICE candidate"));
}

#[test]
fn channels_are_independent_and_pipelined() {
    let mut h = Harness::new(vec![spec("ops", 7), spec("fire", 8)]);
    h.attach_all();
    // Both rooms checked at once.
    let e1 = h.take("message", Some("exists"));
    let e2 = h.take("message", Some("exists"));
    assert_eq!((e1["body"]["room"].as_u64(), e2["body"]["room"].as_u64()), (Some(7), Some(8)));
    assert_eq!((e1["handle_id"].as_u64(), e2["handle_id"].as_u64()), (Some(100), Some(102)));
    h.plugin_success(&e2, json!({"videoroom": "success", "room": 8, "exists": true}));
    let edit = h.take("message", Some("edit"));
    assert_eq!((edit["handle_id"].as_u64(), edit["body"]["room"].as_u64()), (Some(102), Some(8)));
    h.plugin_success(&edit, json!({"videoroom": "edited", "room": 8}));
    let edit = h.take("message", Some("edit"));
    h.plugin_success(&edit, json!({"videoroom": "event", "error_code": 433, "error": "Unauthorized (wrong secret)"}));
    let probe = h.take("message", Some("join"));
    h.plugin_event(&probe, json!({"videoroom": "event", "error_code": 433, "error": "Unauthorized (wrong pin)"}), None);
    let j2 = h.take("message", Some("join"));
    assert_eq!(j2["body"]["room"], 8);
    assert_eq!(j2["body"]["display"], "edge/fire");
    assert!(!h.s.all_published());
}

#[test]
fn api_secret_goes_into_every_request() {
    let config = SessionConfig { api_secret: Some("apis".into()), ..SessionConfig::default() };
    let mut s = Session::new(config, vec![spec("ops", 7)], &[], Instant::now());
    let Some(Output::Send(t)) = s.poll_output() else { panic!() };
    assert_eq!(serde_json::from_str::<Value>(&t).unwrap()["apisecret"], "apis");
    assert!(!format!("{s:?}").contains("apis"));
}
