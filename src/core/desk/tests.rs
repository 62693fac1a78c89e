use super::*;

fn desk(channels: &[&str]) -> DeskPortConfig {
    let text = format!(
        "device_id = \"d\"\n{}[port.desk]\nkind = \"desk\"\nchannels = [{}]\n",
        channels.iter().map(|c| format!("[channel.{c}]\n")).collect::<String>(),
        channels.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ")
    );
    match crate::config::parse_str(&text, "t.toml").unwrap().port.remove("desk").unwrap() {
        crate::config::PortConfig::Desk(d) => d,
        _ => unreachable!(),
    }
}

fn effects(core: &mut DeskCore) -> Vec<DeskEffect> {
    std::iter::from_fn(|| core.poll_effect()).collect()
}

#[test]
fn debounce_takes_an_edge_once_it_has_held_and_ignores_bounces() {
    let t = Instant::now();
    let ms = |n| t + Duration::from_millis(n);
    let mut d = Debounce::new(Duration::from_millis(20), false);
    d.edge(ms(0), true);
    d.edge(ms(3), false); // contact bounce
    d.edge(ms(5), true);
    assert_eq!(d.poll_timeout(), Some(ms(25)));
    assert_eq!(d.handle_timeout(ms(24)), None);
    assert_eq!(d.handle_timeout(ms(25)), Some(true));
    assert!(d.level());
    // A glitch shorter than the hold time is no release.
    d.edge(ms(100), false);
    d.edge(ms(110), true);
    assert_eq!(d.poll_timeout(), None);
    assert_eq!(d.handle_timeout(ms(200)), None);
    assert!(d.level());
    d.edge(ms(300), false);
    assert_eq!(d.handle_timeout(ms(320)), Some(false));
    // Held at start-up: no press until it has been let go.
    let mut held = Debounce::new(Duration::from_millis(20), true);
    assert_eq!(held.poll_timeout(), None);
    held.edge(ms(0), false);
    assert_eq!(held.handle_timeout(ms(20)), Some(false));
    held.edge(ms(50), true);
    assert_eq!(held.handle_timeout(ms(70)), Some(true));
}

#[test]
fn presses_follow_ptt_selection_channel_ptt_and_all_call() {
    let mut core = DeskCore::new(&desk(&["a", "b", "c"]));
    assert_eq!(effects(&mut core), vec![DeskEffect::Select { channel: 0 }]);
    core.apply(DeskAction::Ptt { on: true }).unwrap();
    assert_eq!(effects(&mut core), vec![DeskEffect::Floor { channel: 0, on: true }]);
    // Selecting another channel while talking moves the talk there.
    core.apply(DeskAction::Select { channel: 2 }).unwrap();
    assert_eq!(
        effects(&mut core),
        vec![
            DeskEffect::Select { channel: 2 },
            DeskEffect::Floor { channel: 0, on: false },
            DeskEffect::Floor { channel: 2, on: true }
        ]
    );
    core.apply(DeskAction::ChannelPtt { channel: 1, on: true }).unwrap();
    assert_eq!(effects(&mut core), vec![DeskEffect::Floor { channel: 1, on: true }]);
    core.apply(DeskAction::AllCall { on: true }).unwrap();
    assert_eq!(effects(&mut core), vec![DeskEffect::Floor { channel: 0, on: true }]);
    core.apply(DeskAction::AllCall { on: false }).unwrap();
    core.apply(DeskAction::Ptt { on: false }).unwrap();
    assert_eq!(
        effects(&mut core),
        vec![DeskEffect::Floor { channel: 0, on: false }, DeskEffect::Floor { channel: 2, on: false }]
    );
    core.release_all();
    assert_eq!(effects(&mut core), vec![DeskEffect::Floor { channel: 1, on: false }]);
    assert!((0..3).all(|c| !core.pressed(c)));
}

#[test]
fn refused_actions_change_nothing() {
    let mut core = DeskCore::new(&desk(&["a", "b"]));
    effects(&mut core);
    assert!(core.apply(DeskAction::Select { channel: 5 }).is_err());
    assert!(core.apply(DeskAction::Volume { channel: 0, db: 40.0 }).is_err());
    assert!(core.apply(DeskAction::Pan { channel: 0, pan: f32::NAN }).is_err());
    assert!(core.apply(DeskAction::Patch { a: 1, b: 1, on: true }).is_err());
    assert!(core.apply(DeskAction::Patch { a: 0, b: 1, on: false }).is_err());
    assert_eq!(effects(&mut core), vec![]);
    assert_eq!(core.selected(), 0);
    core.apply(DeskAction::Patch { a: 1, b: 0, on: true }).unwrap();
    assert!(core.apply(DeskAction::Patch { a: 0, b: 1, on: true }).is_err(), "already patched");
    core.apply(DeskAction::ToggleListen { channel: 1 }).unwrap();
    assert_eq!(
        effects(&mut core),
        vec![DeskEffect::Patch { a: 1, b: 0, on: true }, DeskEffect::Listen { channel: 1, on: false }]
    );
    assert!(!core.listening(1));
}

#[test]
fn actions_parse_from_json_and_malformed_ones_are_refused() {
    use serde_json::json;
    let ch = ["ops".to_string(), "fire".to_string()];
    let ok = [
        (json!({"action": "select", "channel": "fire"}), DeskAction::Select { channel: 1 }),
        (json!({"action": "ptt", "on": true}), DeskAction::Ptt { on: true }),
        (json!({"action": "ptt", "channel": "ops", "on": false}), DeskAction::ChannelPtt { channel: 0, on: false }),
        (json!({"action": "all_call", "on": true}), DeskAction::AllCall { on: true }),
        (json!({"action": "listen", "channel": "ops", "on": false}), DeskAction::Listen { channel: 0, on: false }),
        (json!({"action": "volume", "channel": "ops", "db": -6}), DeskAction::Volume { channel: 0, db: -6.0 }),
        (json!({"action": "pan", "channel": "fire", "pan": 1}), DeskAction::Pan { channel: 1, pan: 1.0 }),
        (
            json!({"action": "patch", "channels": ["ops", "fire"], "on": true}),
            DeskAction::Patch { a: 0, b: 1, on: true },
        ),
    ];
    for (v, want) in ok {
        assert_eq!(DeskAction::from_json(&v, &ch), Ok(want), "{v}");
    }
    let bad = [
        json!([1]),
        json!({"channel": "ops"}),
        json!({"action": "explode"}),
        json!({"action": "select", "channel": "nope"}),
        json!({"action": "select", "channel": 3}),
        json!({"action": "ptt"}),
        json!({"action": "ptt", "on": "yes"}),
        json!({"action": "volume", "channel": "ops", "db": 1e9}),
        json!({"action": "pan", "channel": "ops", "pan": -1.5}),
        json!({"action": "patch", "channels": ["ops"], "on": true}),
        json!({"action": "patch", "channels": ["ops", "ops"], "on": true}),
        json!({"action": "listen", "channel": "ops", "on": true, "extra": 1}),
    ];
    for v in bad {
        assert!(DeskAction::from_json(&v, &ch).is_err(), "{v} accepted");
    }
}

#[test]
fn leds_follow_rx_tx_busy_selection_and_blink_on_deny() {
    let t = Instant::now();
    let ms = |n| t + Duration::from_millis(n);
    let mut core = DeskCore::new(&desk(&["a", "b"]));
    let led = |kind, channel| DeskLed { kind, channel };
    assert!(core.led(led(DeskLedKind::Select, Some(0)), t));
    assert!(!core.led(led(DeskLedKind::Rx, None), t));
    core.set_rx(0b10);
    assert!(core.led(led(DeskLedKind::Rx, Some(1)), t) && !core.led(led(DeskLedKind::Rx, Some(0)), t));
    assert!(core.led(led(DeskLedKind::Rx, None), t));
    core.set_tx(0, true);
    assert!(core.led(led(DeskLedKind::Tx, Some(0)), t) && core.led(led(DeskLedKind::Tx, None), t));
    core.set_busy(1, true);
    assert!(core.led(led(DeskLedKind::Busy, Some(1)), t));
    core.set_busy(1, false);
    core.denied(ms(0), 1);
    let busy = |n| core.led(led(DeskLedKind::Busy, Some(1)), ms(n));
    let blink: Vec<bool> = [0, 50, 125, 200, 250, 300, 400].into_iter().map(busy).collect();
    assert_eq!(blink, [true, true, false, false, true, true, false]);
    assert!(!busy(1000), "the blink ends after a second");
    assert_eq!(core.poll_timeout(ms(0)), Some(ms(125)));
    assert_eq!(core.poll_timeout(ms(1000)), None);
}

#[test]
fn buttons_become_actions_once_debounced_and_select_and_listen_act_on_press() {
    let t = Instant::now();
    let ms = |n| t + Duration::from_millis(n);
    let config = desk(&["a", "b"]);
    let hold = Duration::from_millis(config.debounce_ms);
    let mut core = DeskCore::new(&config);
    effects(&mut core);
    core.add_button(DeskButton::Ptt, false);
    core.add_button(DeskButton::Select(1), false);
    core.add_button(DeskButton::Listen(1), false);
    // Held at start-up: no talk until it has been let go once.
    core.add_button(DeskButton::ChannelPtt(0), true);
    assert_eq!(core.poll_timeout(t), None);

    core.button(ms(0), DeskButton::Select(1), true);
    assert_eq!(core.poll_timeout(ms(0)), Some(ms(0) + hold));
    assert_eq!(core.handle_timeout(ms(0) + hold - Duration::from_millis(1)), vec![]);
    assert_eq!(core.handle_timeout(ms(0) + hold), vec![(DeskAction::Select { channel: 1 }, Ok(()))]);
    // Letting go of select or listen does nothing; pressing listen toggles it.
    let t1 = ms(100);
    core.button(t1, DeskButton::Select(1), false);
    core.button(t1, DeskButton::Listen(1), true);
    assert_eq!(core.handle_timeout(t1 + hold), vec![(DeskAction::ToggleListen { channel: 1 }, Ok(()))]);
    assert!(!core.listening(1));
    assert_eq!(
        effects(&mut core),
        vec![DeskEffect::Select { channel: 1 }, DeskEffect::Listen { channel: 1, on: false }]
    );

    // The main PTT talks on the selected channel while held, on both edges.
    let t2 = ms(200);
    core.button(t2, DeskButton::Ptt, true);
    assert_eq!(core.handle_timeout(t2 + hold), vec![(DeskAction::Ptt { on: true }, Ok(()))]);
    assert_eq!(effects(&mut core), vec![DeskEffect::Floor { channel: 1, on: true }]);
    let t3 = ms(300);
    core.button(t3, DeskButton::Ptt, false);
    assert_eq!(core.handle_timeout(t3 + hold), vec![(DeskAction::Ptt { on: false }, Ok(()))]);
    assert_eq!(effects(&mut core), vec![DeskEffect::Floor { channel: 1, on: false }]);

    // The channel PTT held since start-up: released, then pressed, it talks.
    let t4 = ms(400);
    core.button(t4, DeskButton::ChannelPtt(0), true);
    assert_eq!(core.poll_timeout(t4), None, "still at its start-up level: no edge");
    core.button(t4, DeskButton::ChannelPtt(0), false);
    assert_eq!(core.handle_timeout(t4 + hold), vec![(DeskAction::ChannelPtt { channel: 0, on: false }, Ok(()))]);
    assert_eq!(effects(&mut core), vec![]);
    let t5 = ms(500);
    core.button(t5, DeskButton::ChannelPtt(0), true);
    assert_eq!(core.handle_timeout(t5 + hold), vec![(DeskAction::ChannelPtt { channel: 0, on: true }, Ok(()))]);
    assert_eq!(effects(&mut core), vec![DeskEffect::Floor { channel: 0, on: true }]);
    // A button the desk does not have is ignored.
    core.button(t5, DeskButton::AllCall, true);
    assert_eq!(core.poll_timeout(t5), None);
}

#[test]
fn replay_last_asks_for_a_replay_of_the_selected_channel_and_never_for_a_floor() {
    let t = Instant::now();
    let config = desk(&["a", "b"]);
    let hold = Duration::from_millis(config.debounce_ms);
    let mut core = DeskCore::new(&config);
    effects(&mut core);
    core.add_button(DeskButton::ReplayLast, false);
    core.apply(DeskAction::Select { channel: 1 }).unwrap();
    effects(&mut core);
    // The button acts on press, not on release.
    core.button(t, DeskButton::ReplayLast, true);
    assert_eq!(core.handle_timeout(t + hold), vec![(DeskAction::ReplayLast { channel: None }, Ok(()))]);
    assert_eq!(effects(&mut core), vec![DeskEffect::Replay { channel: 1 }]);
    core.button(t + hold * 3, DeskButton::ReplayLast, false);
    assert_eq!(core.handle_timeout(t + hold * 4), vec![]);
    // A named channel, from JSON as consoles and the fleet send it.
    let names = ["a".to_string(), "b".to_string()];
    let a = DeskAction::from_json(&serde_json::json!({"action": "replay_last", "channel": "a"}), &names).unwrap();
    assert_eq!(a, DeskAction::ReplayLast { channel: Some(0) });
    core.apply(a).unwrap();
    assert_eq!(effects(&mut core), vec![DeskEffect::Replay { channel: 0 }]);
    assert!(DeskAction::from_json(&serde_json::json!({"action": "replay_last", "channel": "x"}), &names).is_err());
    assert!(DeskAction::from_json(&serde_json::json!({"action": "replay_last", "on": true}), &names).is_err());
    assert!(core.apply(DeskAction::ReplayLast { channel: Some(2) }).is_err());
    // Nothing about it talks: no floor, no TX state.
    assert!(effects(&mut core).is_empty());
    assert!(!core.state("desk", &names).channels.iter().any(|c| c.tx));
}
