//! The GCS face over real HTTP: encryption at rest, crash safety, bad input.

use crate::harness::{Server, contains, files_under, raw};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

fn make_bucket(s: &Server, name: &str) {
    let r = raw(
        &s.url,
        "POST",
        "/storage/v1/b?project=p",
        &[("content-type", "application/json")],
        json!({"name": name}).to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

fn put(s: &Server, bucket: &str, name: &str, data: &[u8]) -> crate::harness::Raw {
    raw(
        &s.url,
        "POST",
        &format!("/upload/storage/v1/b/{bucket}/o?uploadType=media&name={name}"),
        &[("content-type", "application/octet-stream")],
        data,
    )
}

fn get(s: &Server, bucket: &str, name: &str) -> crate::harness::Raw {
    raw(
        &s.url,
        "GET",
        &format!("/download/storage/v1/b/{bucket}/o/{name}?alt=media"),
        &[],
        b"",
    )
}

fn md5(data: &[u8]) -> Vec<u8> {
    use md5::Digest;
    md5::Md5::digest(data).to_vec()
}

/// A known plaintext and its MD5 (raw, hex, base64) appear nowhere under the data dir.
#[test]
fn plaintext_and_md5_never_reach_disk() {
    let mut s = Server::start(&[]);
    make_bucket(&s, "plain");
    let canary: Vec<u8> = b"SEALSTORE-PLAINTEXT-CANARY-"
        .iter()
        .copied()
        .cycle()
        .take(200_000)
        .collect();
    let r = put(&s, "plain", "canary.txt", &canary);
    assert_eq!(r.status, 200);
    // A small object is stored inline in the metadata database: the same holds there.
    let small_canary = &canary[..4096];
    assert_eq!(put(&s, "plain", "small-canary.txt", small_canary).status, 200);
    let digest = md5(&canary);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let needles = [
        b"SEALSTORE-PLAINTEXT-CANARY-".to_vec(),
        digest.clone(),
        hex.into_bytes(),
        STANDARD.encode(&digest).into_bytes(),
    ];
    assert_eq!(get(&s, "plain", "canary.txt").body, canary);
    s.restart();
    assert_eq!(get(&s, "plain", "canary.txt").body, canary);
    assert_eq!(get(&s, "plain", "small-canary.txt").body, small_canary);
    for (path, bytes) in files_under(&s.dir) {
        for n in &needles {
            assert!(!contains(&bytes, n), "plaintext or its MD5 found in {}", path.display());
        }
    }
    // Blob paths are random ids, never names.
    for (path, _) in files_under(&s.dir.join("blobs")) {
        let p = path.to_string_lossy();
        assert!(!p.contains("canary") && !p.contains("plain"), "{p}");
    }
}

/// An object of one segment lives in its metadata row (no blob file); a larger one is
/// cut into 8 MiB parts, and ranged reads across part boundaries decrypt correctly.
#[test]
fn large_objects_span_parts_and_small_ones_stay_inline() {
    // Soft delete off, so deleting the big object erases its parts at once.
    let mut s = Server::start(&["--default-soft-delete-seconds", "0"]);
    make_bucket(&s, "parts");
    let blobs = s.dir.join("blobs");
    let small = b"tiny object".to_vec();
    assert_eq!(put(&s, "parts", "small", &small).status, 200);
    assert_eq!(files_under(&blobs).len(), 0, "a one-segment object wrote a blob file");
    let len = (17 << 20) + 5;
    let big: Vec<u8> = (0..len)
        .map(|i: usize| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let r = put(&s, "parts", "big", &big);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["md5Hash"], STANDARD.encode(md5(&big)));
    assert_eq!(files_under(&blobs).len(), 3, "17 MiB should be three 8 MiB parts");
    s.restart();
    assert_eq!(get(&s, "parts", "big").body, big);
    assert_eq!(get(&s, "parts", "small").body, small);
    let part = 8usize << 20;
    for (lo, hi) in [
        (part - 10, part + 10),
        (2 * part - 1, 2 * part),
        (0, 0),
        (len - 3, len - 1),
    ] {
        let r = raw(
            &s.url,
            "GET",
            "/download/storage/v1/b/parts/o/big?alt=media",
            &[("range", &format!("bytes={lo}-{hi}"))],
            b"",
        );
        assert_eq!(r.status, 206);
        assert!(r.body == big[lo..=hi], "range {lo}-{hi}");
    }
    let small_range = raw(
        &s.url,
        "GET",
        "/download/storage/v1/b/parts/o/small?alt=media",
        &[("range", "bytes=5-7")],
        b"",
    );
    assert_eq!(small_range.body, b"obj");
    // Copying a small object keeps it inline; deleting the big one removes its parts.
    let c = raw(
        &s.url,
        "POST",
        "/storage/v1/b/parts/o/small/copyTo/b/parts/o/small2",
        &[],
        b"",
    );
    assert_eq!(c.status, 200, "{}", String::from_utf8_lossy(&c.body));
    assert_eq!(get(&s, "parts", "small2").body, small);
    assert_eq!(raw(&s.url, "DELETE", "/storage/v1/b/parts/o/big", &[], b"").status, 204);
    assert_eq!(files_under(&blobs).len(), 0);
    assert_eq!(
        raw(&s.url, "DELETE", "/storage/v1/b/parts/o/small", &[], b"").status,
        204
    );
    assert_eq!(get(&s, "parts", "small").status, 404);
    assert_eq!(get(&s, "parts", "small2").body, small);
}

/// `--inline-max-bytes` moves the line between inline and blob-file objects; 0 sends
/// every object through the blob store.
#[test]
fn inline_threshold_is_configurable() {
    let s = Server::start(&["--inline-max-bytes", "100"]);
    make_bucket(&s, "thr");
    let blobs = s.dir.join("blobs");
    assert_eq!(put(&s, "thr", "99", &[1u8; 99]).status, 200);
    assert_eq!(files_under(&blobs).len(), 0);
    assert_eq!(put(&s, "thr", "100", &[2u8; 100]).status, 200);
    assert_eq!(files_under(&blobs).len(), 1);
    assert_eq!(get(&s, "thr", "99").body, vec![1u8; 99]);
    assert_eq!(get(&s, "thr", "100").body, vec![2u8; 100]);
    let s = Server::start(&["--inline-max-bytes", "0"]);
    make_bucket(&s, "none");
    assert_eq!(put(&s, "none", "empty", b"").status, 200);
    assert_eq!(put(&s, "none", "tiny", b"x").status, 200);
    assert_eq!(files_under(&s.dir.join("blobs")).len(), 2);
    assert_eq!(get(&s, "none", "tiny").body, b"x");
    assert_eq!(get(&s, "none", "empty").body, b"");
}

/// Uploads run concurrently while the server is killed with SIGKILL. After a restart,
/// every acknowledged object reads back byte-exact with its hashes, no half-written
/// object is visible, and the sweeper removes orphaned blobs.
#[test]
fn acknowledged_writes_survive_kill_9() {
    let mut s = Server::start(&[]);
    make_bucket(&s, "crash");
    let url = s.url.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(std::sync::Mutex::new(Vec::<(String, Vec<u8>)>::new()));
    let mut threads = vec![];
    for t in 0..4 {
        let (url, stop, acked) = (url.clone(), stop.clone(), acked.clone());
        threads.push(std::thread::spawn(move || {
            let mut i = 0u32;
            while !stop.load(Ordering::SeqCst) {
                let name = format!("t{t}-{i}");
                let len = 1000 + (i as usize * 7919 + t * 104_729) % 300_000;
                let data: Vec<u8> = (0..len)
                    .map(|j| (j as u32).wrapping_mul(31).wrapping_add(i * 7 + t as u32) as u8)
                    .collect();
                let agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .new_agent();
                let r = agent
                    .post(format!(
                        "{url}/upload/storage/v1/b/crash/o?uploadType=media&name={name}"
                    ))
                    .header("content-type", "application/octet-stream")
                    .send(&data[..]);
                if let Ok(r) = r
                    && r.status() == 200
                {
                    acked.lock().unwrap().push((name, data));
                }
                i += 1;
            }
        }));
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    s.kill9();
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 5,
        "too few uploads completed before the kill: {}",
        acked.len()
    );
    s.start_again();
    for (name, data) in &acked {
        let r = get(&s, "crash", name);
        assert_eq!(r.status, 200, "{name}");
        assert!(r.body == *data, "{name} differs after the crash");
        let meta = raw(&s.url, "GET", &format!("/storage/v1/b/crash/o/{name}"), &[], b"").json();
        assert_eq!(meta["md5Hash"], STANDARD.encode(md5(data)), "{name}");
    }
    // Everything listed is readable and complete (nothing half-written is visible).
    // Every page: more than one page of objects may have been written before the kill.
    let mut items = Vec::new();
    let mut token = String::new();
    loop {
        let listing = raw(
            &s.url,
            "GET",
            &format!("/storage/v1/b/crash/o?pageToken={token}"),
            &[],
            b"",
        )
        .json();
        items.extend(listing["items"].as_array().cloned().unwrap_or_default());
        match listing["nextPageToken"].as_str() {
            Some(t) => token = t.to_owned(),
            None => break,
        }
    }
    for it in &items {
        let name = it["name"].as_str().unwrap();
        let r = get(&s, "crash", name);
        assert_eq!(r.status, 200, "{name}");
        assert_eq!(r.body.len().to_string(), it["size"].as_str().unwrap());
    }
    // The start-up sweep left only the blobs that listed objects reference.
    let blob_files = files_under(&s.dir.join("blobs"));
    assert!(
        blob_files.iter().all(|(p, _)| !p.to_string_lossy().contains('#')),
        "partial writes survived the restart"
    );
    // Objects of one segment (under 64 KiB) live in their metadata row; the others are
    // one blob file each here (under 8 MiB, one part).
    let big = |it: &&serde_json::Value| it["size"].as_str().unwrap().parse::<u64>().unwrap() >= 64 * 1024;
    assert!(items.iter().any(|it| !big(&it)), "no inline object was written");
    assert_eq!(
        blob_files.len(),
        items.iter().filter(big).count(),
        "orphaned blobs survived the sweep"
    );
}

#[test]
fn bad_input_gets_gcs_errors_and_stores_nothing() {
    let s = Server::start(&[]);
    make_bucket(&s, "bad");
    let check = |r: crate::harness::Raw, status: u16| {
        assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
        if r.header("content-type").is_some_and(|c| c.starts_with("text/plain")) {
            // Errors of the resumable data protocol are plain text, as on GCS.
            assert!(!r.body.is_empty());
            assert!(r.header("x-sealstore-error-reason").is_some());
            return;
        }
        let j = r.json();
        assert_eq!(j["error"]["code"], status);
        assert!(j["error"]["errors"][0]["reason"].is_string(), "{j}");
        assert_eq!(j["error"]["message"], j["error"]["errors"][0]["message"]);
    };
    let ct = [("content-type", "multipart/related; boundary=\"XYZ\"")];
    let base = "/upload/storage/v1/b/bad/o?uploadType=multipart";
    check(raw(&s.url, "POST", base, &ct, b"garbage without boundaries"), 400);
    check(
        raw(
            &s.url,
            "POST",
            base,
            &ct,
            b"--XYZ\r\ncontent-type: application/json\r\n\r\n{\"name\":\"x\"}\r\n--XYZ\r\n\r\nhalf",
        ),
        400,
    );
    check(raw(&s.url, "POST", base, &[("content-type", "text/plain")], b"x"), 400);
    let long = "a".repeat(1025);
    check(put(&s, "bad", &long, b"x"), 400);
    check(
        raw(
            &s.url,
            "POST",
            "/upload/storage/v1/b/bad/o?uploadType=bogus&name=x",
            &[],
            b"x",
        ),
        400,
    );
    let bad_crc = "--XYZ\r\ncontent-type: application/json\r\n\r\n{\"name\":\"crc\",\"crc32c\":\"AAAAAA==\"}\r\n--XYZ\r\ncontent-type: text/plain\r\n\r\nhello\r\n--XYZ--";
    check(raw(&s.url, "POST", base, &ct, bad_crc.as_bytes()), 400);
    check(raw(&s.url, "GET", "/storage/v1/b/bad/o/crc", &[], b""), 404);
    // A resumable chunk with a malformed Content-Range.
    let r = raw(
        &s.url,
        "POST",
        "/upload/storage/v1/b/bad/o?uploadType=resumable&name=r",
        &[("content-type", "application/json")],
        b"{}",
    );
    assert_eq!(r.status, 200);
    let loc = r.header("location").unwrap().to_owned();
    let path = &loc[loc.find("/upload/").unwrap()..];
    check(raw(&s.url, "PUT", path, &[("content-range", "bytes 9-1/*")], b"x"), 400);
    check(
        raw(&s.url, "PUT", path, &[("content-range", "bytes 0-9/*")], b"short"),
        400,
    );
    // A non-final chunk that is not a multiple of 256 KiB.
    check(
        raw(&s.url, "PUT", path, &[("content-range", "bytes 0-9/*")], &[0u8; 10]),
        400,
    );
    // An upload whose final checksum is wrong leaves nothing behind.
    let r = raw(
        &s.url,
        "PUT",
        path,
        &[("content-range", "bytes 0-4/5"), ("x-goog-hash", "crc32c=AAAAAA==")],
        b"hello",
    );
    check(r, 400);
    check(raw(&s.url, "GET", "/storage/v1/b/bad/o/r", &[], b""), 404);
    let listing = raw(&s.url, "GET", "/storage/v1/b/bad/o", &[], b"").json();
    assert_eq!(listing["items"].as_array().map_or(0, Vec::len), 0, "{listing}");
    assert!(s.log_text().lines().all(|l| !l.contains("panicked")));
}
