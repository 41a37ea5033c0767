//! The checksum test vectors in `docs/checksum-vectors.json` (written by the independent
//! Python implementation `docs/checksum_reference.py`) match this implementation, both
//! from scratch and through the incremental tree.

use ctxsync_core::checksum::{checksum_and_size, ChecksumTree};
use serde_json::Value;

#[test]
fn the_vectors_in_docs_match() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/checksum-vectors.json"
    );
    let text = std::fs::read_to_string(path).expect("docs/checksum-vectors.json is in the repo");
    let file: Value = serde_json::from_str(&text).expect("the vectors file is JSON");
    assert_eq!(file["format"], "b3m1");
    let vectors = file["vectors"].as_array().expect("a list of vectors");
    assert!(vectors.len() >= 10, "the file holds the vectors");
    for v in vectors {
        let name = v["name"].as_str().unwrap_or("?");
        let expected = (
            v["checksum"].as_str().expect("checksum").to_owned(),
            v["size"].as_u64().expect("size"),
        );
        assert_eq!(checksum_and_size(&v["document"]), expected, "{name}");
        assert_eq!(
            ChecksumTree::new().refresh(&v["document"]),
            expected,
            "{name} (tree)"
        );
    }
    // The two member orders of one object are one vector's checksum.
    assert_eq!(vectors[8]["checksum"], vectors[9]["checksum"]);
    assert_ne!(vectors[8]["checksum"], vectors[10]["checksum"]);
}
