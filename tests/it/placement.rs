//! Several cells of one instance identity and a partition moved between them (issue 31,
//! docs/operations.md "Several cells"). Runs on the engine of the run (`common::init_store`):
//! the embedded one, and the cell in the test command's second run.

use std::os::unix::fs::PermissionsExt as _;

use crate::common::{init_store, pid, small};
use kukaku::crypto::credential::Token;
use kukaku::crypto::credential::{Reach, Role};
use kukaku::crypto::{AdminScope, Kek};
use kukaku::ledger::{Kind, PartitionId, TreeSize};
use kukaku::store::{
    AppendError, NewEntry, Paths, PlacementError, Store, VerifyOptions, now_unix_ms,
};

fn append(store: &Store, p: &PartitionId, n: usize, tag: &str) -> Result<(), AppendError> {
    for i in 0..n {
        let body = format!("{tag} {i}").into_bytes();
        let e = NewEntry::new(Kind::HOUSEHOLD_SNAPSHOT, 1, None, body).unwrap();
        store.append(p, vec![e])?;
    }
    Ok(())
}

/// A new cell of `first`'s identity under `home`: made with a copy of its KEK, then
/// adopted, then opened.
fn sibling(first: &Store, first_paths: &Paths, home: &std::path::Path) -> (Paths, Store) {
    std::fs::create_dir_all(home).unwrap();
    std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o700)).unwrap();
    let paths = Paths::under(home);
    std::fs::copy(&first_paths.kek, &paths.kek).unwrap();
    std::fs::set_permissions(&paths.kek, std::fs::Permissions::from_mode(0o600)).unwrap();
    let empty = init_store(&paths, "hub.test", small()).unwrap();
    first.adopt_as_sibling(empty).unwrap();
    let store = Store::open(&paths, small()).unwrap();
    (paths, store)
}

#[test]
fn a_partition_moves_to_a_sibling_cell_and_its_log_goes_on_there() {
    let dir = tempfile::tempdir().unwrap();
    let a_paths = Paths::under(&dir.path().join("a"));
    let a = init_store(&a_paths, "hub.test", small()).unwrap();
    let (p, q) = (pid("131011"), pid("380014"));
    a.request_partitions(&[p.clone(), q.clone()]).unwrap();
    a.provision(&mut |_, _| {}).unwrap();
    append(&a, &p, 5, "p on a").unwrap();
    append(&a, &q, 3, "q on a").unwrap();
    let later = now_unix_ms() + 86_400_000;
    let (token, _) = a
        .issue_credential(Role::Municipality, Reach::Partition(p.clone()), "m", later)
        .unwrap();
    let token = Token::parse(&token.to_text()).unwrap();
    let (signed, size) = (a.checkpoint(&p).unwrap(), a.size(&p).unwrap());

    let (_b_paths, b) = sibling(&a, &a_paths, &dir.path().join("b"));
    assert_eq!(b.origin(), a.origin());
    assert_eq!(
        b.verifier_key(&p),
        a.verifier_key(&p),
        "one identity, one key"
    );
    let report = a.move_partition(&p, &b).unwrap();
    assert_eq!(report.entries, size);
    assert_eq!(report.credentials, 1);

    // The same log on the new cell: the same signed checkpoint, every body opens.
    assert_eq!(b.checkpoint(&p).unwrap(), signed);
    let verified = b
        .verify_partition(&p, VerifyOptions { with_keys: true })
        .unwrap();
    assert_eq!(verified.bodies_opened, 5);
    let kek = Kek::load_file(&a_paths.kek).unwrap();
    let admin = AdminScope::from_kek(&kek);
    let last = b.read_entry(&admin.partition(&p), size - 1).unwrap();
    assert_eq!(&last.payload[..], b"p on a 4");

    // The old cell takes no more writes of it (its other partitions go on); the new one
    // goes on from the moved log, and proves it extends what the old cell signed.
    let e = append(&a, &p, 1, "late").unwrap_err();
    assert!(matches!(e, AppendError::Moved(_)), "{e}");
    append(&a, &q, 1, "q goes on").unwrap();
    append(&b, &p, 2, "p on b").unwrap();
    let proof = b.prove_consistency(&p, TreeSize(size), None).unwrap();
    let key = b.verifier_key(&p).unwrap();
    let old_root = a
        .verify_partition(&p, VerifyOptions { with_keys: false })
        .unwrap()
        .root;
    proof.verify_with_key(&key, &old_root).unwrap();
    // The municipality's credential authenticates on the new cell.
    b.authenticate(&token, None).unwrap();

    // Not twice, not to a cell of another identity.
    let e = a.move_partition(&p, &b).unwrap_err();
    assert!(matches!(e, PlacementError::AlreadyThere(_)), "{e}");

    // The copy left on the old cell is dropped: its entries and wrapped keys are gone there,
    // its writes are still refused, and the moved log on the new cell is untouched.
    let e = a.drop_moved(&q, q.as_str()).unwrap_err();
    assert!(matches!(e, PlacementError::NotMoved(_)), "{e}");
    let e = a.drop_moved(&p, "380014").unwrap_err();
    assert!(matches!(e, PlacementError::Unconfirmed(_)), "{e}");
    assert!(!a.key_status(&p).unwrap().is_empty());
    let dropped = a.drop_moved(&p, p.as_str()).unwrap();
    assert!(dropped.keys >= 1, "{dropped:?}");
    assert!(
        dropped.system_records >= 2,
        "key metadata and the credential: {dropped:?}"
    );
    assert!(a.key_status(&p).unwrap().is_empty());
    assert!(a.read_entry(&admin.partition(&p), 0).is_err());
    let e = append(&a, &p, 1, "after the drop").unwrap_err();
    assert!(matches!(e, AppendError::Moved(_)), "{e}");
    let again = b
        .verify_partition(&p, VerifyOptions { with_keys: true })
        .unwrap();
    assert_eq!(again.bodies_opened, 7);
    let stranger = Paths::under(&dir.path().join("c"));
    let c = init_store(&stranger, "hub.test", small()).unwrap();
    let e = a.move_partition(&q, &c).unwrap_err();
    assert!(matches!(e, PlacementError::NotSibling), "{e}");
    let e = a.adopt_as_sibling(c).unwrap_err();
    assert!(matches!(e, PlacementError::NotSibling), "{e}");
}

/// A cell serving with a placement map: requests for a partition placed on another cell
/// get 421 with that cell's address, before anything is read; the others are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_for_a_partition_placed_elsewhere_get_421_and_its_cell() {
    use axum::body::Body;
    use http_body_util::BodyExt as _;
    use kukaku::api::placement::Placement;
    use kukaku::api::{AppState, Limits, ServerRole, router};
    use std::sync::Arc;
    use tower::ServiceExt as _;

    let dir = tempfile::tempdir().unwrap();
    let (p, q) = (pid("131011"), pid("380014"));
    let (store, tokens) = tokio::task::block_in_place(|| {
        let store = init_store(&Paths::under(dir.path()), "hub.test", small()).unwrap();
        store.request_partitions(&[p.clone(), q.clone()]).unwrap();
        store.provision(&mut |_, _| {}).unwrap();
        let later = now_unix_ms() + 86_400_000;
        let mut tokens = Vec::new();
        for (role, reach) in [
            (Role::Municipality, Reach::Partition(p.clone())),
            (Role::Municipality, Reach::Partition(q.clone())),
            (Role::Auditor, Reach::Partitions([p.clone()].into())),
        ] {
            let (t, _) = store.issue_credential(role, reach, "t", later).unwrap();
            tokens.push(t.to_text().to_string());
        }
        (store, tokens)
    });
    let cells = [("a", "https://a.example"), ("b", "https://b.example:8443")]
        .map(|(n, u)| (n.to_owned(), u.to_owned()))
        .into();
    let placement = Placement::new("a", cells, [(p.clone(), "b".to_owned())].into()).unwrap();
    let state = AppState::new(Arc::new(store), ServerRole::Hub).with_placement(placement);
    let app = router(state, Limits::default());
    let get = |uri: String, token: &str| {
        axum::http::Request::get(uri)
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap()
    };
    let cases = [
        (get("/v1/checkpoint".into(), &tokens[0]), 421),
        (get("/v1/checkpoint".into(), &tokens[1]), 200),
        (
            get(format!("/v1/audit/partitions/{p}/checkpoints"), &tokens[2]),
            421,
        ),
    ];
    for (i, (req, want)) in cases.into_iter().enumerate() {
        let res = app.clone().oneshot(req).await.unwrap();
        let status = res.status().as_u16();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, want, "case {i}: {text}");
        if want == 421 {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["error"]["code"], "moved", "case {i}: {text}");
            let message = v["error"]["message"].as_str().unwrap();
            assert!(
                message.contains("cell b at https://b.example:8443"),
                "case {i}: {text}"
            );
        }
    }
}
