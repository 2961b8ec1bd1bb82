//! Reservations: unique values claimed and released atomically with events.

use super::*;
use crate::{AppendError, ExpectedVersion::*, Reservation};
use std::time::{SystemTime, UNIX_EPOCH};

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as i64
}

/// Claim, re-claim by the same owner, conflict (reporting owner and position), release by a
/// non-owner (no-op), release by the owner.
pub async fn reservations_claim_and_release(log: Arc<dyn EventLog>) {
    let alice = stream("acme", "alice");
    let bob = stream("acme", "bob");
    let key = "acme/username/alice";
    assert_eq!(log.reservation(key).await.expect("r"), None);

    let c = must_append(
        &*log,
        with_reservations(&alice, NoStream, vec![claim(key, "alice")]),
    )
    .await;
    let held = log.reservation(key).await.expect("r").expect("claimed");
    assert_eq!(held.owner, "alice");
    assert_eq!(held.position, c.first_position);
    assert_eq!(held.expires_at, None);

    // The same owner may claim again; the new claim replaces the expiry.
    let later = now_micros() + 3_600_000_000;
    let again = Reservation::Claim {
        key: key.into(),
        owner: "alice".into(),
        expires_at: Some(later),
    };
    must_append(&*log, with_reservations(&alice, Any, vec![again])).await;
    let held = log
        .reservation(key)
        .await
        .expect("r")
        .expect("still claimed");
    assert_eq!(
        (held.owner.as_str(), held.expires_at),
        ("alice", Some(later))
    );
    let claimed_at = held.position;

    let head = log.head();
    let err = log
        .append(with_reservations(&bob, NoStream, vec![claim(key, "bob")]))
        .await
        .expect_err("held by alice");
    match err {
        AppendError::ReservationHeld {
            key: k,
            owner,
            position,
        } => {
            assert_eq!(
                (k.as_str(), owner.as_str(), position),
                (key, "alice", claimed_at)
            );
        }
        other => panic!("expected ReservationHeld, got {other:?}"),
    }
    assert_eq!(log.head(), head, "the refused claim wrote nothing");
    assert_eq!(log.stream_version(&bob).await.expect("v"), None);

    // Bob releasing alice's key does nothing (but his event is written).
    must_append(
        &*log,
        with_reservations(&bob, NoStream, vec![release(key, "bob")]),
    )
    .await;
    assert_eq!(
        log.reservation(key).await.expect("r").expect("held").owner,
        "alice"
    );

    must_append(
        &*log,
        with_reservations(&alice, Any, vec![release(key, "alice")]),
    )
    .await;
    assert_eq!(log.reservation(key).await.expect("r"), None);
    let c = must_append(&*log, with_reservations(&bob, Any, vec![claim(key, "bob")])).await;
    let held = log.reservation(key).await.expect("r").expect("bob's now");
    assert_eq!(
        (held.owner.as_str(), held.position),
        ("bob", c.first_position)
    );
}

/// `Share` takes a free key and joins the holders of a held one, without failing; a shared
/// key refuses exclusive claims by anyone else until every holder has released it, and the
/// next holder becomes its first when the first leaves.
pub async fn reservations_share(log: Arc<dyn EventLog>) {
    let s = stream("acme", "s");
    let share = |owner: &str| Reservation::Share {
        key: "name-1".into(),
        owner: owner.into(),
    };
    let c = must_append(&*log, with_reservations(&s, Any, vec![share("first")])).await;
    let held = log.reservation("name-1").await.expect("r").expect("taken");
    assert_eq!(
        (held.owner.as_str(), held.position, held.sharers.len()),
        ("first", c.first_position, 0)
    );

    let c2 = must_append(&*log, with_reservations(&s, Any, vec![share("second")])).await;
    assert!(
        c2.first_position > c.first_position,
        "the events were still written"
    );
    // Sharing again changes nothing.
    must_append(&*log, with_reservations(&s, Any, vec![share("second")])).await;
    let held = log
        .reservation("name-1")
        .await
        .expect("r")
        .expect("still taken");
    assert_eq!(
        (held.owner.as_str(), held.position, held.sharers.clone()),
        ("first", c.first_position, vec!["second".to_owned()])
    );

    // Held by two: an exclusive claim by a third fails, one by a holder keeps it as it is.
    let err = log
        .append(with_reservations(&s, Any, vec![claim("name-1", "third")]))
        .await
        .expect_err("shared key is held");
    assert!(matches!(err, AppendError::ReservationHeld { ref owner, .. } if owner == "first"));
    must_append(
        &*log,
        with_reservations(&s, Any, vec![claim("name-1", "second")]),
    )
    .await;

    // The first holder leaves: the second holds it alone, from that transaction on.
    let c3 = must_append(
        &*log,
        with_reservations(&s, Any, vec![release("name-1", "first")]),
    )
    .await;
    let held = log.reservation("name-1").await.expect("r").expect("held");
    assert_eq!(
        (held.owner.as_str(), held.position, held.sharers.len()),
        ("second", c3.first_position, 0)
    );
    let err = log
        .append(with_reservations(&s, Any, vec![claim("name-1", "third")]))
        .await
        .expect_err("still held by the second");
    assert!(matches!(err, AppendError::ReservationHeld { ref owner, .. } if owner == "second"));

    // A sharer that is not the first leaves: the first keeps it.
    must_append(
        &*log,
        with_reservations(&s, Any, vec![share("third"), release("name-1", "third")]),
    )
    .await;
    let held = log.reservation("name-1").await.expect("r").expect("held");
    assert_eq!((held.owner.as_str(), held.sharers.len()), ("second", 0));

    // The last holder leaves: free for anyone.
    must_append(
        &*log,
        with_reservations(&s, Any, vec![release("name-1", "second")]),
    )
    .await;
    assert_eq!(log.reservation("name-1").await.expect("r"), None);
    must_append(
        &*log,
        with_reservations(&s, Any, vec![claim("name-1", "third")]),
    )
    .await;
}

/// A claim whose `expires_at` has passed reads as free and can be taken by another owner;
/// one in the future holds.
pub async fn reservations_expire(log: Arc<dyn EventLog>) {
    let s = stream("acme", "s");
    let claim_until = |key: &str, owner: &str, at: i64| Reservation::Claim {
        key: key.into(),
        owner: owner.into(),
        expires_at: Some(at),
    };
    let past = now_micros() - 1_000_000;
    let future = now_micros() + 3_600_000_000;
    must_append(
        &*log,
        with_reservations(&s, Any, vec![claim_until("old", "a", past)]),
    )
    .await;
    assert_eq!(
        log.reservation("old").await.expect("r"),
        None,
        "expired reads as free"
    );
    let c = must_append(&*log, with_reservations(&s, Any, vec![claim("old", "b")])).await;
    let held = log.reservation("old").await.expect("r").expect("b took it");
    assert_eq!(
        (held.owner.as_str(), held.position),
        ("b", c.first_position)
    );

    must_append(
        &*log,
        with_reservations(&s, Any, vec![claim_until("new", "a", future)]),
    )
    .await;
    let err = log
        .append(with_reservations(&s, Any, vec![claim("new", "b")]))
        .await
        .expect_err("not expired yet");
    assert!(matches!(err, AppendError::ReservationHeld { ref owner, .. } if owner == "a"));

    // An expired claim is free for Share too: it is taken, not joined.
    must_append(
        &*log,
        with_reservations(&s, Any, vec![claim_until("lapsed", "a", past)]),
    )
    .await;
    let share = Reservation::Share {
        key: "lapsed".into(),
        owner: "b".into(),
    };
    must_append(&*log, with_reservations(&s, Any, vec![share])).await;
    let held = log.reservation("lapsed").await.expect("r").expect("taken");
    assert_eq!((held.owner.as_str(), held.sharers.len()), ("b", 0));
}

/// Reservations of one transaction apply in order and see each other; a failure among them
/// undoes the ones before it.
pub async fn reservations_apply_in_order(log: Arc<dyn EventLog>) {
    let s = stream("acme", "s");
    // Claim then release: free afterwards.
    must_append(
        &*log,
        with_reservations(&s, Any, vec![claim("k1", "a"), release("k1", "a")]),
    )
    .await;
    assert_eq!(log.reservation("k1").await.expect("r"), None);

    // Rename: release the old value and claim the new one atomically.
    must_append(
        &*log,
        with_reservations(&s, Any, vec![claim("old-name", "a")]),
    )
    .await;
    let c = must_append(
        &*log,
        with_reservations(
            &s,
            Any,
            vec![release("old-name", "a"), claim("new-name", "a")],
        ),
    )
    .await;
    assert_eq!(log.reservation("old-name").await.expect("r"), None);
    assert_eq!(
        log.reservation("new-name")
            .await
            .expect("r")
            .expect("held")
            .position,
        c.first_position
    );

    // Claim by a, then by b in the same transaction: b sees a's claim and fails; a's claim
    // (and the events) must not survive.
    let head = log.head();
    let err = log
        .append(with_reservations(
            &s,
            Any,
            vec![claim("k2", "a"), claim("k2", "b")],
        ))
        .await
        .expect_err("b conflicts with a's claim earlier in the transaction");
    assert!(matches!(err, AppendError::ReservationHeld { ref owner, .. } if owner == "a"));
    assert_eq!(log.reservation("k2").await.expect("r"), None);
    assert_eq!(log.head(), head);

    // A later conflict undoes an earlier release, too.
    must_append(&*log, with_reservations(&s, Any, vec![claim("k3", "x")])).await;
    let head = log.head();
    let err = log
        .append(with_reservations(
            &s,
            Any,
            vec![release("k3", "x"), claim("new-name", "b")],
        ))
        .await
        .expect_err("new-name is a's");
    assert!(matches!(err, AppendError::ReservationHeld { .. }));
    assert_eq!(
        log.reservation("k3")
            .await
            .expect("r")
            .expect("still x's")
            .owner,
        "x"
    );
    assert_eq!(log.head(), head);
}
