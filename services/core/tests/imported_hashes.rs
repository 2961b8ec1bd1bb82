//! Known-answer vectors from other implementations (`ops/test/make_hash_fixtures.py`: Python's
//! bcrypt, argon2-cffi, hashlib, passlib; Firebase's published scrypt sample): each verifies
//! with its password, fails with a wrong one, and survives being stored.

use roster_core::imported_hash::ImportedHash;
use serde_json::Value;

fn fixtures() -> Vec<Value> {
    serde_json::from_str(include_str!("fixtures/imported_hashes.json")).expect("fixtures parse")
}

#[test]
fn every_vector_verifies_with_its_password_only() {
    let fixtures = fixtures();
    let mut algorithms = std::collections::BTreeSet::new();
    for f in &fixtures {
        let hash = ImportedHash::parse(&f["password_hash"])
            .unwrap_or_else(|e| panic!("{}: {e}", f["source"]));
        algorithms.insert(hash.algorithm());
        let (right, wrong) = (
            f["password"].as_str().unwrap(),
            f["wrong"].as_str().unwrap(),
        );
        assert!(
            hash.verify(right.as_bytes()),
            "{} ({}) with its password",
            hash.algorithm(),
            f["source"]
        );
        assert!(
            !hash.verify(wrong.as_bytes()),
            "{} ({}) with a wrong one",
            hash.algorithm(),
            f["source"]
        );
        let stored = hash.to_stored();
        assert_eq!(ImportedHash::from_stored(&stored).as_ref(), Some(&hash));
        // Exported (serialized) as an import line takes it.
        let exported = serde_json::to_value(&hash).unwrap();
        assert_eq!(ImportedHash::parse(&exported).as_ref(), Ok(&hash));
    }
    assert_eq!(
        algorithms.len(),
        11,
        "every algorithm of the contract: {algorithms:?}"
    );
}
