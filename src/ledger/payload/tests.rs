//! Tests of the open payloads: round trips, canonical forms, refusals.
use super::*;

#[test]
fn round_trips_and_rejects_trailing_bytes() {
    let g = Genesis {
        origin: "hub.example".into(),
    };
    let b = g.encode().unwrap();
    assert_eq!(Genesis::decode(&b), Ok(g));
    let mut longer = b.clone();
    longer.push(0);
    assert_eq!(Genesis::decode(&longer), Err(PayloadError::Trailing(1)));

    let e = KeyEvent {
        event: KeyEventKind::Rotate,
        key_id: 2,
        class: KeyClass::Dated,
        epoch: 2026,
        version: 2,
        count: 0,
        actor: "system".into(),
        reason: "nonce budget".into(),
    };
    let b = e.encode().unwrap();
    assert_eq!(KeyEvent::decode(&b), Ok(e));
    for n in 0..b.len() {
        assert!(KeyEvent::decode(&b[..n]).is_err());
    }
    let mut bad = b.clone();
    bad[2] = 99;
    assert!(KeyEvent::decode(&bad).is_err());
}

/// Issue 26 item 4: a reason with a control character was encoded and then refused by
/// the decoder, so the auditor could not report the event. Every open text is now
/// checked at encode time; the known answers cover each control class.
#[test]
fn control_characters_are_refused_at_encode_time() {
    let event = |reason: &str, actor: &str| KeyEvent {
        event: KeyEventKind::Destroy,
        key_id: 1,
        class: KeyClass::Resident,
        epoch: 0,
        version: 1,
        count: 0,
        actor: actor.into(),
        reason: reason.into(),
    };
    for (reason, actor, at) in [
        (
            "court order\nsecond line",
            "admin-cli",
            Some(("reason", 12)),
        ),
        ("\u{1b}[2Jhidden", "admin-cli", Some(("reason", 1))),
        ("tab\there", "admin-cli", Some(("reason", 4))),
        ("del\u{7f}", "admin-cli", Some(("reason", 4))),
        ("c1\u{85}", "admin-cli", Some(("reason", 3))),
        ("ok", "admin\r", Some(("actor", 6))),
        ("令和8年 条例第3号による消去", "admin-cli", None),
    ] {
        let got = event(reason, actor).encode();
        match at {
            Some((field, at)) => assert_eq!(got, Err(PayloadError::Control { field, at })),
            None => assert_eq!(KeyEvent::decode(&got.unwrap()), Ok(event(reason, actor))),
        }
    }
    assert!(check_text("x", "plain").is_ok());
}

#[test]
fn access_record_round_trips_and_is_strict() {
    let a = AccessRecord {
        actor: "0001020304050607".into(),
        role: "municipality".into(),
        route: "GET /v1/entries/{seq}".into(),
        purpose: "entry_read".into(),
        kinds: vec![0x0010, 0x0100],
        first_seq: 3,
        count: 1,
        result: "ok".into(),
        request_id: "r-1".into(),
    };
    let b = a.encode().unwrap();
    assert_eq!(AccessRecord::decode(&b), Ok(a.clone()));
    for n in 0..b.len() {
        assert!(AccessRecord::decode(&b[..n]).is_err());
    }
    let mut longer = b.clone();
    longer.push(0);
    assert_eq!(
        AccessRecord::decode(&longer),
        Err(PayloadError::Trailing(1))
    );
    let unsorted = AccessRecord {
        kinds: vec![0x0100, 0x0010],
        ..a.clone()
    };
    assert!(unsorted.encode().is_err());
    let non_ascii = AccessRecord {
        purpose: "閲覧".into(),
        ..a
    };
    assert!(non_ascii.encode().is_err());
}

#[test]
fn provision_and_receipt_round_trip() {
    let p = ProvisionRecord {
        provider: "hub.example/131011".into(),
        recipient: "replicator 0001020304050607".into(),
        items: vec!["資格情報(世帯)".into(), "資格情報(個人)".into()],
        nondisclosure: false,
        purpose: "forward_to_intermediate".into(),
        first_seq: 2,
        count: 5,
        checkpoint_size: 8,
        request_id: "r".into(),
    };
    let b = p.encode().unwrap();
    assert_eq!(ProvisionRecord::decode(&b), Ok(p));
    for n in 0..b.len() {
        assert!(ProvisionRecord::decode(&b[..n]).is_err());
    }
    let f = ForwardingReceipt {
        hub_origin: "hub.example/131011".into(),
        hub_from: 0,
        hub_to: 8,
        hub_checkpoint: "hub.example/131011\n8\nAAAA\n\n\u{2014} x y\n".into(),
        hub_seqs: vec![2, 3, 7],
    };
    let b = f.encode().unwrap();
    assert_eq!(ForwardingReceipt::decode(&b), Ok(f));
    let mut longer = b.clone();
    longer.push(0);
    assert!(ForwardingReceipt::decode(&longer).is_err());
}
